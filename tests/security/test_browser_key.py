"""The saved-chats key: not the app's secret, and the same after a restart.

Part three, row 10: ``gr.BrowserState``'s key is in ``/config`` for every
visitor, and it used to be the first half of ``data/.secret``.
"""

from __future__ import annotations

import httpx
import pytest

from studio.datadir import load_browser_key, load_secret
from tests.conftest import free_port, spawn_main
from tests.helpers.browser import send, set_slider, stored, wait_until_done, wait_until_stored
from tests.security.conftest import RunningApp, _wait_for_page, start_app
from ui.saved_chats import CHATS_KEY

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]


def config_text(app) -> str:
    return httpx.get(app.url + "config", timeout=60).text


def browser_keys(app) -> set[str]:
    """The keys the page's ``gr.BrowserState``s encrypt with (saved chats, own personas)."""
    config = httpx.get(app.url + "config", timeout=60).json()
    return {
        c["props"]["secret"]
        for c in config["components"]
        if c.get("type") == "browserstate" and "secret" in c.get("props", {})
    }


def test_no_part_of_the_secret_is_published_and_saved_chats_survive_a_restart(tmp_path):
    data = tmp_path / "data"
    app = start_app(data)
    try:
        keys = browser_keys(app)
        published = config_text(app)
    finally:
        app.stop()
    secret = (data / ".secret").read_text(encoding="ascii")
    assert len(keys) == 1, keys
    key = keys.pop()
    # Not one 12-character piece of the secret is in what every visitor receives.
    pieces = {secret[i : i + 12] for i in range(len(secret) - 11)}
    assert not [p for p in pieces if p in published]
    assert key not in secret and key == (data / ".browser-key").read_text(encoding="ascii")

    again = start_app(data)  # chats saved before the restart still open: same key
    try:
        assert browser_keys(again) == {key}
    finally:
        again.stop()
    assert (data / ".secret").read_text(encoding="ascii") == secret


def test_a_folder_of_an_earlier_version_keeps_its_saved_chats_and_gets_a_new_secret(tmp_path):
    """The old key (the secret's first half) stays the browser key; the secret is replaced."""
    old_secret = "0123456789abcdef" * 4
    (tmp_path / ".secret").write_text(old_secret, encoding="ascii")
    key = load_browser_key(tmp_path)
    assert key == old_secret[:32]
    secret = load_secret(tmp_path).decode()
    assert len(secret) == 64 and old_secret[:32] not in secret and old_secret[32:] not in secret
    assert load_browser_key(tmp_path) == key and load_secret(tmp_path).decode() == secret
    assert (tmp_path / ".browser-key").stat().st_mode & 0o077 == 0


def test_a_new_folder_gets_a_key_unrelated_to_its_secret(tmp_path):
    key = load_browser_key(tmp_path)
    secret = load_secret(tmp_path).decode()
    assert len(key) == 32 and key not in secret
    assert load_browser_key(tmp_path) == key


def start_on(data, port: int) -> RunningApp:
    """``start_app`` on a given port, patient with a busy machine (a start can take minutes)."""
    proc = spawn_main("--port", str(port), "--data-dir", str(data))
    app = RunningApp(proc, f"http://127.0.0.1:{port}/", port, data)
    app.read()
    _wait_for_page(app, timeout=600)
    return app


@pytest.mark.browser
def test_saved_chats_open_after_a_restart(browser, tmp_path):
    """In Chromium: chats the browser keeps are read back by the restarted app (same origin).

    (The stored user name uses the same key since this row: ``browser_keys``
    above finds one key where it found a second, random one per start.)
    """
    data, port = tmp_path / "data", free_port()
    app = start_on(data, port)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(app.url)
        page.wait_for_selector("#message textarea", timeout=120000)
        set_slider(page, "max_new_tokens", 4)
        before = stored(page, CHATS_KEY)
        send(page, "restart-chat-okapi")
        wait_until_done(page, timeout=180000)
        page.wait_for_function(
            "document.querySelector('#saved-chats').innerText.includes('restart-chat-okapi')",
            timeout=120000,
        )
        wait_until_stored(page, CHATS_KEY, before, timeout=120)  # the browser has stored it
        app.stop()

        app = start_on(data, port)  # the same origin: the same localStorage
        page.reload()
        page.wait_for_selector("#message textarea", timeout=120000)
        page.wait_for_function(
            "document.querySelector('#saved-chats').innerText.includes('restart-chat-okapi')",
            timeout=120000,
        )
    finally:
        context.close()
        app.stop()
