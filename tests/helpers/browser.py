"""Driving the app's page in Chromium (playwright): settings, tabs, sending, waiting for replies."""

from __future__ import annotations

import json

from tests.helpers.wait import settled, wait_until

BOT = "#chatbot .message-row.bot-row"
USER_ROWS = "#chatbot .message-row.user-row"


def open_settings(page):
    """Unfold the sidebar's decoding settings (and the sidebar, on a phone)."""
    if not page.locator("#preset").is_visible():
        if not page.locator("#sidebar.open").count():
            page.locator("#sidebar .toggle-button").click()
        page.get_by_text("Decoding settings").click()
        page.locator("#preset").wait_for(state="visible")


def set_slider(page, name, value):
    """Type ``value`` into the number box of the decoding setting ``name``."""
    open_settings(page)
    box = page.locator(f"#setting-{name} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def open_tab(page, name):
    """Click the tab called ``name``."""
    page.get_by_role("tab", name=name).click()


def ingest_in_page(page, path, timeout=180000):
    """Upload a file in the Documents tab and wait until the summary says it was added (the
    first ingest loads the embedder: over a minute on a busy 2-core machine)."""
    open_tab(page, "Documents")
    page.locator("#doc-upload input[type=file]").set_input_files(str(path))
    page.locator("#ingest").click()
    # "added" is a status cell: the column headers and the progress text never say it
    page.wait_for_function(
        "document.querySelector('#ingest-summary').innerText.includes('added')", timeout=timeout
    )


def fold_sidebar_on_phones(page):
    """On a phone the open sidebar covers the chat: fold it away."""
    if page.viewport_size["width"] < 768 and page.locator("#sidebar.open").count():
        page.locator("#sidebar .toggle-button").click()
        page.wait_for_function("!document.querySelector('#sidebar.open')")


def send(page, text):
    """Type ``text`` in the message box and press Send."""
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
    """The first reply's text ("" before there is one)."""
    rows = page.locator(BOT)
    return rows.nth(0).inner_text() if rows.count() else ""


def wait_for_text(page, selector, text, timeout=30000):
    """Wait until the element at ``selector`` shows ``text``."""
    page.wait_for_function(
        "([sel, text]) => { const e = document.querySelector(sel);"
        " return e && e.innerText.includes(text); }",
        arg=[selector, text],
        timeout=timeout,
    )


def turn(page, text, tokens=8):
    """Send ``text`` for a reply of at most ``tokens`` tokens and wait for it to finish."""
    set_slider(page, "max_new_tokens", tokens)
    send(page, text)
    wait_until_done(page, timeout=60000)


def export(page) -> dict:
    """The chat as the page's Export button downloads it."""
    with page.expect_download() as download:
        page.locator("#export").click()
    return json.loads(open(download.value.path(), encoding="utf-8").read())


def wait_for_sidebar(page):
    """On a phone the page folds its sidebar away as it loads: wait until it has."""
    if page.viewport_size["width"] < 768:
        page.wait_for_function("!document.querySelector('#sidebar.open')")


def stored(page, key: str):
    """What the page keeps in its localStorage under ``key`` (None if nothing)."""
    return page.evaluate("(k) => localStorage.getItem(k)", key)


def wait_until_stored(page, key: str, before, timeout: float = 60):
    """Wait until the page has written ``key`` to its localStorage (the value is no longer
    ``before``, read before the action) and has stopped writing it; returns the value."""
    wait_until(lambda: stored(page, key) != before, timeout, f"the browser to store {key}")
    return settled(lambda: stored(page, key), quiet=0.5, timeout=timeout)


def text(page, selector) -> str:
    """The inner text of the first element ``selector`` matches."""
    return page.locator(selector).inner_text()


def wait_text(page, selector, *needles, timeout=60000):
    """Wait until the element ``selector`` shows every one of ``needles``."""
    page.wait_for_function(
        "([sel, needles]) => { const e = document.querySelector(sel);"
        " return e && needles.every(n => e.innerText.includes(n)); }",
        arg=[selector, list(needles)],
        timeout=timeout,
    )


def fill_number(page, elem_id, value):
    """Type ``value`` into the number box of the component ``elem_id`` and commit it."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
