"""Logins that hold: every route closed without one, guessing throttled, no session wiping.

Rows 3 and 4 of part two, and the rows that held (--share without auth, 401s).
"""

from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client, handle_file

from studio.config import ConfigError, load_config
from tests.security.conftest import USERS, login, start_app

ROUTES = [
    ("GET", "/config"),
    ("GET", "/gradio_api/info"),
    ("POST", "/gradio_api/call/chat"),
    ("POST", "/gradio_api/queue/join"),
    ("GET", "/gradio_api/queue/data?session_hash=x"),
    ("POST", "/gradio_api/upload"),
    ("GET", "/gradio_api/heartbeat/some-session"),
    ("POST", "/gradio_api/cancel"),
    ("GET", "/gradio_api/file=main.py"),
    ("POST", "/gradio_api/run/chat"),
    ("GET", "/gradio_api/stream/x/y/z/playlist.m3u8"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_needs_a_login(auth_app, method, path):
    r = httpx.request(method, auth_app.url.rstrip("/") + path, json={}, timeout=30)
    assert r.status_code == 401, (path, r.status_code, r.text[:200])


def test_heartbeat_without_login_cannot_end_a_session(auth_app, tmp_path):
    """Row 3: a stranger's GET of /heartbeat/<hash> used to end the session and delete uploads."""
    alice = Client(auth_app.url, auth=("alice", USERS["alice"]), verbose=False)
    doc = tmp_path / "notes.txt"
    doc.write_text("Alice keeps the spare key under the blue flowerpot.", encoding="utf-8")
    alice.predict(files=[handle_file(str(doc))], api_name="/ingest")
    session = alice.session_hash
    stranger = httpx.Client(base_url=auth_app.url, timeout=5)
    r = stranger.get(f"/gradio_api/heartbeat/{session}")
    assert r.status_code == 401
    # Nor can a logged-in Bob open (and close) a heartbeat or result stream of hers.
    bob = login(auth_app, "bob")
    assert bob.get(f"/gradio_api/heartbeat/{session}").status_code == 403
    r = bob.get("/gradio_api/queue/data", params={"session_hash": session})
    assert r.status_code == 403
    time.sleep(1)
    mine = [d for d in alice.predict(api_name="/documents") if d["collection"] == "mine"]
    assert [d["source"] for d in mine] == ["notes.txt"]


def test_failed_logins_are_throttled_per_user_and_per_address(tmp_path):
    """Its own app: a lock-out of the loopback address would lock the other tests out."""
    users = tmp_path / "users.txt"
    users.write_text("bob:bob-password-22\ncarol:carol-password\n", encoding="utf-8")
    app = start_app(tmp_path / "data", "--auth-file", str(users), "--login-attempts", "3")

    def attempt(user, password):
        return httpx.post(app.url + "login", data={"username": user, "password": password})

    try:
        # --login-attempts 3: the fourth failure for bob must wait, with a clear message.
        codes = [attempt("bob", "nope").status_code for _ in range(5)]
        assert codes[:3] == [400, 400, 400] and codes[-1] == 429
        r = attempt("bob", "nope")
        assert "Try again in" in r.json()["detail"]
        # The right password waits too while the lock-out lasts.
        assert attempt("bob", "bob-password-22").status_code == 429
        # The address is locked as well: guessing other names from it does not help.
        assert attempt("someone-else", "x").status_code == 429
    finally:
        app.stop()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--auth", ":"], "user name must be non-empty"),
        (["--auth", "ann:"], "shorter than 8"),
        (["--auth", "ann:short"], "shorter than 8"),
        (["--auth", "nocolon"], "USER:PASS"),
        (["--share"], "--share-without-auth"),
        (["--share", "--auth", ":"], "user name must be non-empty"),
        (["--admins", "zed", "--auth", "ann:long-password"], "zed, who cannot log in"),
    ],
)
def test_weak_or_missing_credentials_are_refused(argv, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(argv, {})


def test_credentials_from_a_file_or_the_environment(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# team\nann:ann-password\n\nben:ben-password\n", encoding="utf-8")
    cfg = load_config(["--auth-file", str(users), "--admins", "ann"], {})
    assert cfg.credentials() == [("ann", "ann-password"), ("ben", "ben-password")]
    env = load_config([], {"CHAT_STUDIO_AUTH": "cat:cat-password"})
    assert env.credentials() == [("cat", "cat-password")]
    users.write_text("ann:short\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        load_config(["--auth-file", str(users)], {})
