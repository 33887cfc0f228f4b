"""Screenshot: attribution of a retrieval answer, for the README (docs/explain.png).

    python bench/screenshot_explain.py

Starts the app on the bundled model, ingests one document of
``tests/data/rag_corpus`` in the page, asks a question with **Use documents**,
selects the answer's first content token in Inspect and explains it over the
prompt's parts (ablation), then saves the view. Needs Debian's chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "When does the brindlecap grow?"
DOCUMENT = ROOT / "tests" / "data" / "rag_corpus" / "brindlecap_field_guide.md"


def main() -> None:
    """Drive the page and save docs/explain.png."""
    from playwright.sync_api import sync_playwright

    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.models import default_model_path
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, start_studio
    from tests.helpers.browser import ingest_in_page, open_tab, send, wait_until_done

    studio = start_studio(LlamaCppBackend(default_model_path()), Path(tempfile.mkdtemp()))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(studio.demo.local_url)
            page.wait_for_selector("#message textarea")
            ingest_in_page(page, DOCUMENT)
            open_tab(page, "Chat")
            page.locator("#use-docs-box input").check()
            send(page, QUESTION)
            wait_until_done(page, timeout=120000)
            open_tab(page, "Inspect")
            tokens = page.locator("#reply-tokens .token")
            tokens.first.wait_for(timeout=60000)
            tokens.nth(min(3, tokens.count() - 1)).click()
            page.get_by_text("Why this token? (attribution)").click()
            page.locator("#attr-level label", has_text="parts").click()
            page.locator("#attr-go").click()
            page.wait_for_function(
                "document.querySelector('#attr-summary').innerText.includes('Pushed toward')",
                timeout=180000,
            )
            box = page.locator("#explain-attr")
            box.scroll_into_view_if_needed()
            out = ROOT / "docs" / "explain.png"
            box.screenshot(path=str(out))
            print(f"wrote {out}")
            print(page.locator("#attr-summary").inner_text())
            browser.close()
    finally:
        studio.close()


if __name__ == "__main__":
    main()
