"""The Train tab in a real Chromium: liked replies → a job → a live loss chart → Stop.

The page chats with the bundled model (llama.cpp, real replies to like); training is
pointed at a tiny Llama-style folder made here (``--model``), so each step takes
milliseconds instead of seconds.
"""

from __future__ import annotations

import pytest

from tests.conftest import start_studio
from tests.helpers.browser import fill_number, open_tab, send, text, wait_text, wait_until_done
from tests.helpers.tiny_models import save_tiny

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
