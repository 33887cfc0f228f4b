"""Pure logic of callers, sessions, logins and limits (no web server)."""

from types import SimpleNamespace

import pytest

from chat.errors import InputError
from studio.access import Access, AccessError
from studio.auth import LoginThrottle, parse_credentials
from studio.limits import Limits


def request(session, user=None):
    return SimpleNamespace(session_hash=session, username=user)


def test_sessions_are_bound_to_their_first_login():
    access = Access(b"s" * 32, logins=True, admins={"ann"})
    assert access.caller(request("tab1", "ann")).admin
    assert not access.caller(request("tab2", "ben")).admin
    with pytest.raises(AccessError, match="another login"):
        access.caller(request("tab1", "ben"))
    with pytest.raises(AccessError, match="Log in"):
        access.caller(request("tab3", None))
    assert access.may_use("tab1", "ann") and not access.may_use("tab1", "ben")


def test_only_the_owner_ends_a_session_and_clean_ups_run():
    ended = []
    access = Access(b"s" * 32, logins=True)
    access.on_end(ended.append)
    access.caller(request("tab1", "ann"))
    assert not access.end(request("tab1", None)) and not access.end(request("tab1", "ben"))
    assert access.end(request("tab1", "ann")) and ended == ["tab1"]


def test_idle_sessions_without_a_tab_expire():
    now = [0.0]
    access = Access(b"s" * 32, ttl_s=10, clock=lambda: now[0])
    access.connected = lambda s: s == "open-tab"
    for s in ("api-call", "open-tab"):
        access.caller(request(s))
    now[0] = 11
    assert access.sweep() == ["api-call"] and access.live() == ["open-tab"]


def test_admins_without_logins_only_on_a_private_app():
    assert Access(b"s" * 32, private=True).caller(request("a")).admin
    assert not Access(b"s" * 32, private=False).caller(request("a")).admin


def test_private_names_need_the_secret():
    a, b = Access(b"a" * 32), Access(b"b" * 32)
    assert a.private_name("tab") == a.private_name("tab") != b.private_name("tab")
    assert "tab" not in a.private_name("tab")


def test_upload_allowance_per_session():
    access = Access(b"s" * 32)
    caller = access.caller(request("tab"))
    access.add_upload(caller, 600, limit=1000)
    with pytest.raises(AccessError, match="--max-session-upload-mb"):
        access.add_upload(caller, 600, limit=1000)


def test_login_throttle_waits_grow_and_success_clears():
    now = [0.0]
    throttle = LoginThrottle(allowed=2, clock=lambda: now[0])
    for _ in range(2):
        assert throttle.wait_s("1.2.3.4", "ann") == 0
        throttle.failed("1.2.3.4", "ann")
    assert throttle.wait_s("1.2.3.4", "ann") == 30
    assert throttle.wait_s("5.6.7.8", "ann") == 30  # per user too
    assert throttle.wait_s("1.2.3.4", "other") == 30  # per address too
    throttle.failed("1.2.3.4", "ann")
    assert throttle.wait_s("1.2.3.4", "ann") == 60
    now[0] = 700  # failures older than ten minutes are forgotten
    assert throttle.wait_s("1.2.3.4", "ann") == 0
    throttle.failed("1.2.3.4", "ann")
    throttle.succeeded("1.2.3.4", "ann")
    assert throttle.wait_s("1.2.3.4", "ann") == 0


def test_credentials_lines():
    assert parse_credentials("# c\nann:password1\n\n", "f") == [("ann", "password1")]
    with pytest.raises(ValueError, match="line 1"):
        parse_credentials("ann:short", "f")


def test_chat_limits():
    limits = Limits(max_message_chars=100, max_history_messages=4, max_reply_tokens=64)
    limits.check_chat("hi", [{"role": "user", "content": "x"}] * 4, 64)
    with pytest.raises(InputError, match="--max-message-chars"):
        limits.check_chat("x" * 101, [], 8)
    with pytest.raises(InputError, match="--max-history-messages"):
        limits.check_chat("hi", [{"role": "user", "content": "x"}] * 5, 8)
    with pytest.raises(InputError, match="--max-reply-tokens"):
        limits.check_chat("hi", [], 65)


def test_a_browser_key_outlives_a_reload_and_nobody_else_can_use_it():
    """Issue 17.3: the same browser finds its documents again; a forged key, or a key
    presented by another login, gets a fresh owner of its own."""
    now = [0.0]
    gone = []
    access = Access(b"s" * 32, logins=True, ttl_s=10, clock=lambda: now[0])
    access.on_owner_end(gone.append)
    key = access.browser_key(request("tab1", "ann"), "")
    assert access.owner("tab1") == key != "tab1"
    assert access.end(request("tab1", "ann")) and gone == []  # a reload: kept
    assert access.browser_key(request("tab2", "ann"), key) == key == access.owner("tab2")
    # Another login, or a forged key, never reaches it.
    assert access.browser_key(request("tab3", "ben"), key) != key
    nonce = key.split(".")[0]
    assert access.browser_key(request("tab4", "ann"), nonce + "." + "0" * 32) != key
    # The upload allowance follows the browser, not the tab.
    access.add_upload(access.caller(request("tab2", "ann")), 600, limit=1000)
    access.end(request("tab2", "ann"))
    access.browser_key(request("tab5", "ann"), key)
    with pytest.raises(AccessError, match="--max-session-upload-mb"):
        access.add_upload(access.caller(request("tab5", "ann")), 600, limit=1000)
    # ttl_s after its last tab closed, the browser's documents go.
    access.end(request("tab5", "ann"))
    now[0] = 11
    access.sweep()
    assert key in gone
