"""Screenshots of the chat page for the README (docs/chat-1400.png and docs/chat-400.png).

    python bench/screenshots.py [FOLDER]     # FOLDER: docs/ unless given

Starts the app on the bundled model as ``main.py`` does (its own context window), asks one
question at 1400 px and saves the page, then says hi at phone width (400 px) and saves that.
Needs Debian's chromium. A script, not a test: a picture asserts nothing.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "What is a language model, in one sentence?"


def main(folder: Path) -> None:
    """Drive the page and save both pictures in ``folder``."""
    from playwright.sync_api import sync_playwright

    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.models import default_model_path
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, start_studio
    from tests.helpers.browser import turn, wait_for_sidebar

    studio = start_studio(LlamaCppBackend(default_model_path()), Path(tempfile.mkdtemp()))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(studio.demo.local_url)
            page.wait_for_selector("#message textarea")
            turn(page, QUESTION, tokens=40)
            page.get_by_text("Decoding settings").click()  # fold the settings again
            page.wait_for_selector("#preset", state="hidden")
            page.evaluate(
                "() => { window.scrollTo(0, 0);"
                " document.querySelectorAll('#sidebar *').forEach(e => { e.scrollTop = 0; }); }"
            )
            save(page, folder / "chat-1400.png")
            phone = browser.new_page(viewport={"width": 400, "height": 860})
            phone.goto(studio.demo.local_url)
            phone.wait_for_selector("#message textarea")
            wait_for_sidebar(phone)
            turn(phone, "Hi", tokens=6)  # sending folds the sidebar away again
            save(phone, folder / "chat-400.png")
            browser.close()
    finally:
        studio.close()


def save(page, path: Path) -> None:
    """Screenshot ``page`` once everything on it has stopped moving (fonts, folding)."""
    page.evaluate("document.fonts.ready")
    page.wait_for_function(
        "document.getAnimations().every(a => a.playState !== 'running')", timeout=10000
    )
    page.screenshot(path=str(path))
    print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")
