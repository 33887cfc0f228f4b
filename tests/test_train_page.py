"""The Train tab in a real Chromium: liked replies → a job → a live loss chart → Stop.

The page chats with the bundled model (llama.cpp, real replies to like); training is
pointed at a tiny Llama-style folder made here (``--model``), so each step takes
milliseconds instead of seconds.
"""

from __future__ import annotations

import pytest

from tests.conftest import start_studio
from tests.helpers.tiny_models import save_tiny
from tests.test_browser import open_tab, send, wait_until_done

pytestmark = [pytest.mark.browser, pytest.mark.model]


@pytest.fixture(scope="module")
def train_app(gguf_backend, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-page")
    studio = start_studio(gguf_backend, root / "data", model=save_tiny("llama", root / "tiny"))
    yield studio
    studio.close()


@pytest.fixture
def tpage(browser, train_app):
    context = browser.new_context()
    page = context.new_page()
    page.goto(train_app.demo.local_url)
    page.wait_for_selector("#message textarea")
    yield page
    context.close()


def text(page, selector) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector, *needles, timeout=60000):
    page.wait_for_function(
        "([sel, needles]) => { const e = document.querySelector(sel);"
        " return e && needles.every(n => e.innerText.includes(n)); }",
        arg=[selector, list(needles)],
        timeout=timeout,
    )


def fill_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def step_of(page) -> int:
    return int(text(page, "#train-line").split("step ")[1].split(" ")[0])


def test_train_tab_starts_from_liked_replies_charts_the_loss_and_stops(tpage):
    page = tpage
    for question in ("What is 7 plus 8?", "Say hello."):
        send(page, question)
        wait_until_done(page, timeout=90000)
        page.locator("#chatbot button[aria-label='Like']").last.click()
    page.wait_for_timeout(800)  # the likes are saved with the chat
    open_tab(page, "Train")
    page.locator("#train-check").click()
    wait_text(page, "#train-counts", "rows loaded", "to train on")
    assert "**" not in text(page, "#train-counts")  # Markdown, rendered
    assert page.locator("#train-preview .loss").count() > 0  # the reply's tokens carry loss
    assert "carry the loss" in text(page, "#train-preview")

    fill_number(page, "train-max-steps", 2000)
    fill_number(page, "train-batch-size", 1)
    fill_number(page, "train-eval-every", 2)
    page.locator("#train-start").click()
    wait_text(page, "#train-line", "running", "train loss", timeout=120000)
    first = step_of(page)
    page.wait_for_function(
        f"parseInt(document.querySelector('#train-line').innerText.split('step ')[1]) > {first}",
        timeout=60000,
    )  # the chart and the bar follow the job
    assert page.locator("#train-loss canvas, #train-loss svg").count() > 0

    page.locator("#train-stop").click()
    wait_text(page, "#train-bar", "stopped", "Adapter saved", timeout=120000)
    adapter = page.locator("#train-bar code").inner_text()
    wait_text(page, "#train-adapters", adapter)

    # Before and after: the adapter just saved against the base model, on the held-out prompt.
    page.locator("#adapter-pick input").click()
    page.get_by_role("option").filter(has_text=adapter).first.click()
    page.locator("#ba-run").click()
    page.wait_for_function(
        "document.querySelector('#ba-out .base-reply') || document.querySelector('.toast-body')",
        timeout=180000,
    )
    assert not page.locator(".toast-body").count(), page.locator(".toast-body").all_inner_texts()
    assert page.locator("#ba-out .tuned-reply").count() == page.locator(
        "#ba-out .base-reply"
    ).count() >= 1
    assert "tuned" in text(page, "#ba-out")


def test_screenshot_of_training_the_bundled_model(browser, gguf_backend, tmp_path):
    """The README's Train tab picture and figures: 10 LoRA steps on the bundled model."""
    import json
    import os
    from pathlib import Path

    if not os.environ.get("CHAT_STUDIO_SCREENSHOTS"):
        pytest.skip("set CHAT_STUDIO_SCREENSHOTS=1 to refresh docs/train.png")
    studio = start_studio(gguf_backend, tmp_path / "data")  # trains the bundled GGUF itself
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(studio.demo.local_url)
        page.wait_for_selector("#message textarea")
        for question in ("What is 7 plus 8?", "What is 2 plus 2?", "Say hello."):
            send(page, question)
            wait_until_done(page, timeout=90000)
            page.locator("#chatbot button[aria-label='Like']").last.click()
        page.wait_for_timeout(800)
        open_tab(page, "Train")
        page.locator("#train-check").click()
        wait_text(page, "#train-counts", "rows loaded", timeout=120000)
        fill_number(page, "train-max-steps", 10)
        fill_number(page, "train-eval-every", 5)
        page.locator("#train-start").click()
        wait_text(page, "#train-bar", "finished", timeout=600000)
        page.locator("#train-start").evaluate("e => e.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(Path(__file__).resolve().parents[1] / "docs" / "train.png"))
        caller = studio.access.caller(None)
        job = next(iter(studio.ui.training._owners))
        print(json.dumps(studio.ui.training.status(caller, job)))
        context.close()
    finally:
        studio.close()
