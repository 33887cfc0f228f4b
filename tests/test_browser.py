"""A real headless Chromium (Debian's) drives the real app: stream, stop, isolation."""

import time

import pytest

pytestmark = pytest.mark.browser
BOT = "#chatbot .message-row.bot-row"


def open_settings(page):
    """Unfold the sidebar's decoding settings (and the sidebar, on a phone)."""
    if not page.locator("#preset").is_visible():
        if not page.locator("#sidebar.open").count():
            page.locator("#sidebar .toggle-button").click()
        page.get_by_text("Decoding settings").click()
        page.locator("#preset").wait_for(state="visible")


def set_slider(page, name, value):
    open_settings(page)
    box = page.locator(f"#setting-{name} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def open_tab(page, name):
    page.get_by_role("tab", name=name).click()


def ingest_in_page(page, path):
    """Upload a file in the Documents tab and wait until the summary says it was added."""
    open_tab(page, "Documents")
    page.locator("#doc-upload input[type=file]").set_input_files(str(path))
    page.locator("#ingest").click()
    # "added" is a status cell: the column headers and the progress text never say it
    page.wait_for_function(
        "document.querySelector('#ingest-summary').innerText.includes('added')", timeout=60000
    )


def fold_sidebar_on_phones(page):
    """On a phone the open sidebar covers the chat: fold it away."""
    if page.viewport_size["width"] < 768 and page.locator("#sidebar.open").count():
        page.locator("#sidebar .toggle-button").click()
        page.wait_for_function("!document.querySelector('#sidebar.open')")


def send(page, text):
    fold_sidebar_on_phones(page)
    page.locator("#message textarea").fill(text)
    page.locator("#send").click()


def wait_until_done(page, timeout=30000):
    """Wait for the reply to finish (the stats line loses its 'generating…' prefix)."""
    page.wait_for_function(
        "(() => { const t = document.querySelector('#stats-line').innerText;"
        " return t.includes('seed') && !t.includes('generating'); })()",
        timeout=timeout,
    )


def bot_text(page):
    rows = page.locator(BOT)
    return rows.nth(0).inner_text() if rows.count() else ""


def test_streams_then_stop_halts_generation(page):
    assert "llama-cpp" in page.locator("#model-banner").inner_text()
    set_slider(page, "max_new_tokens", 1500)
    send(page, "Write a very long story about a brave little dragon.")
    lengths = []
    deadline = time.time() + 60
    while time.time() < deadline and len(set(lengths)) < 3:
        lengths.append(len(bot_text(page)))
        time.sleep(0.1)
    assert len({n for n in lengths if n}) >= 2, "reply did not stream"
    page.locator("#stop").click()
    page.wait_for_function(
        "document.querySelector('#stats-line').innerText.includes('stopped')", timeout=5000
    )
    time.sleep(0.5)
    frozen = bot_text(page)
    time.sleep(1.5)
    assert bot_text(page) == frozen, "text kept growing after Stop"
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
