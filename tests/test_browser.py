"""A real headless Chromium (Debian's) drives the real app: stream, stop, isolation."""

import time

import pytest

from tests.helpers.browser import BOT, bot_text, send, set_slider, wait_until_done
from tests.helpers.wait import settled, stays

pytestmark = pytest.mark.browser


def test_streams_then_stop_halts_generation(page):
    assert "llama-cpp" in page.locator("#model-banner").inner_text()
    set_slider(page, "max_new_tokens", 1500)
    send(page, "Write a very long story about a brave little dragon.")
    lengths = []
    deadline = time.time() + 60
    while time.time() < deadline and len(set(lengths)) < 3:
        lengths.append(len(bot_text(page)))
        time.sleep(0.1)  # sampling the text as it streams is what this loop tests
    assert len({n for n in lengths if n}) >= 2, "reply did not stream"
    page.locator("#stop").click()
    page.wait_for_function(
        "document.querySelector('#stats-line').innerText.includes('stopped')", timeout=5000
    )
    # What was already on its way may still arrive; after that, nothing more may be added.
    settled(lambda: bot_text(page), quiet=0.5, timeout=10)
    stays(lambda: bot_text(page), 1.5)  # text that kept growing after Stop fails here
    # The model is free again: a new message gets an answer.
    set_slider(page, "max_new_tokens", 8)
    send(page, "Hi")
    page.wait_for_function(f"document.querySelectorAll('{BOT}').length >= 2", timeout=30000)
    wait_until_done(page)
    assert "stopped" not in page.locator("#stats-line").inner_text()


def test_two_sessions_do_not_share_chats(browser, app):
    pages = []
    for _ in range(2):
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.goto(app[1])
        pg.wait_for_selector("#message textarea")
        pages.append(pg)
    first, second = pages
    set_slider(first, "max_new_tokens", 8)
    send(first, "secret-word-alpha")
    wait_until_done(first)
    assert "secret-word-alpha" in first.locator("#chatbot").inner_text()
    assert "secret-word-alpha" not in second.locator("#chatbot").inner_text()
    for pg in pages:
        pg.context.close()


def test_candidates_regenerate_undo_and_export(page):
    set_slider(page, "max_new_tokens", 12)
    set_slider(page, "num_return_sequences", 2)
    send(page, "Say hello.")
    page.wait_for_selector("#candidates", state="visible", timeout=30000)
    boxes = page.locator("#candidates .candidate")
    page.wait_for_function("document.querySelectorAll('#choice label').length === 2", timeout=30000)
    # Each box: a "Candidate k · tokens · log-probability" line, then the text.
    first, second = (boxes.nth(i).inner_text().split("\n", 1)[1].strip() for i in (0, 1))
    assert first and second
    page.locator("#choice label").nth(1).click()  # continue with candidate 2
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel).innerText.includes(text)",
        arg=[BOT, second.split()[0]],
        timeout=10000,
    )
    # Regenerate answers again (the old reply stays as a version); the user message stays once.
    set_slider(page, "num_return_sequences", 1)
    page.locator("#regenerate").click()
    page.wait_for_selector("#candidates", state="hidden", timeout=30000)
    wait_until_done(page)
    assert page.locator("#chatbot .message-row.user-row").count() == 1
    # Export: a JSON file with the reply's metadata, made in the browser itself.
    with page.expect_download() as dl:
        page.locator("#export").click()
    import json

    data = json.loads(open(dl.value.path(), encoding="utf-8").read())
    assert data["messages"][-1]["meta"]["stats"]["backend"] == "llama-cpp"
    assert data["messages"][0]["content"] == "Say hello."
    # Undo puts the message back in the box for editing and removes the exchange.
    page.locator("#undo").click()
    page.wait_for_function(
        "document.querySelectorAll('#chatbot .message-row').length === 0", timeout=10000
    )
    assert page.locator("#message textarea").input_value() == "Say hello."
