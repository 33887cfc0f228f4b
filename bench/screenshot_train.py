"""Screenshot: the Train tab after 10 LoRA steps on the bundled model (docs/train.png).

    python bench/screenshot_train.py

Starts the app on the bundled model, asks three questions and likes the
replies, trains a LoRA adapter on them for 10 steps in the Train tab, saves the
view and prints the job's final status (the README's figures). Needs Debian's
chromium; takes a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Drive the page and save docs/train.png."""
    from playwright.sync_api import sync_playwright

    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.models import default_model_path
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, start_studio
    from tests.helpers.browser import fill_number, open_tab, send, wait_text, wait_until_done

    studio = start_studio(LlamaCppBackend(default_model_path()), Path(tempfile.mkdtemp()))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(studio.demo.local_url)
            page.wait_for_selector("#message textarea")
            for question in ("What is 7 plus 8?", "What is 2 plus 2?", "Say hello."):
                send(page, question)
                wait_until_done(page, timeout=90000)
                page.locator("#chatbot button[aria-label='Like']").last.click()
            page.wait_for_timeout(800)  # the saved chat reaches the browser's storage
            open_tab(page, "Train")
            page.locator("#train-check").click()
            wait_text(page, "#train-counts", "rows loaded", timeout=120000)
            fill_number(page, "train-max-steps", 10)
            fill_number(page, "train-eval-every", 5)
            page.locator("#train-start").click()
            wait_text(page, "#train-bar", "finished", timeout=600000)
            page.locator("#train-start").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1500)  # the chart's last frame
            page.screenshot(path=str(ROOT / "docs" / "train.png"))
            caller = studio.access.caller(None)
            job = next(iter(studio.ui.training._owners))
            print(json.dumps(studio.ui.training.status(caller, job)))
            browser.close()
    finally:
        studio.close()


if __name__ == "__main__":
    main()
