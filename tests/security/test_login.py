"""Logins that hold: every route closed without one, guessing throttled, no session wiping.

Rows 3 and 4 of part two, rows 8 and 9 of part three (no lock-out by a
stranger, no address picked by the client), and the rows that held
(--share without auth, 401s).
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
    time.sleep(1)  # a check that nothing happens: had they ended her session, its clean-up ran
    mine = [d for d in alice.predict(api_name="/documents") if d["collection"] == "mine"]
    assert [d["source"] for d in mine] == ["notes.txt"]


@pytest.fixture(scope="module")
def throttled_app(tmp_path_factory):
    """Its own app: lock-outs of loopback addresses would lock the other tests out.

    127.0.0.4 is a trusted proxy (``--forwarded-allow-ips``); every other
    address is a client. Tests connect from their own loopback addresses
    (all of 127.0.0.0/8 reaches the app on Linux).
    """
    data = tmp_path_factory.mktemp("throttled")
    users = data / "users.txt"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()), encoding="utf-8")
    app = start_app(
        data / "data",
        "--auth-file", str(users),
        "--login-attempts", "3",
        "--forwarded-allow-ips", "127.0.0.4",
    )  # fmt: skip
    yield app
    app.stop()


def attempt(app, user: str, password: str, source: str = "127.0.0.1", forwarded: str = ""):
    """One login from the loopback address ``source``, optionally through a proxy header."""
    transport = httpx.HTTPTransport(local_address=source)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.post(
            app.url + "login", data={"username": user, "password": password}, headers=headers
        )


@pytest.mark.model
@pytest.mark.slow
def test_failed_logins_are_throttled_per_address(throttled_app):
    app = throttled_app
    # --login-attempts 3: the fourth failure from this address must wait, with a clear message.
    codes = [attempt(app, "bob", "nope").status_code for _ in range(5)]
    assert codes[:3] == [400, 400, 400] and codes[-1] == 429
    r = attempt(app, "bob", "nope")
    assert "Try again in" in r.json()["detail"]
    # The right password waits too, from this address, while the lock-out lasts.
    assert attempt(app, "bob", USERS["bob"]).status_code == 429
    # The address is locked whatever the name: guessing other names from it does not help.
    assert attempt(app, "someone-else", "x").status_code == 429


@pytest.mark.model
@pytest.mark.slow
def test_a_stranger_cannot_lock_a_user_out(throttled_app):
    """Part three, row 8: eight wrong passwords for alice from one address locked her out."""
    app = throttled_app
    codes = [attempt(app, "alice", "wrong-guess", "127.0.0.2").status_code for _ in range(8)]
    assert codes[-1] == 429  # the guesser is held back...
    assert attempt(app, "alice", USERS["alice"], "127.0.0.2").status_code == 429
    # ...alice, from her own address, is not.
    assert attempt(app, "alice", USERS["alice"], "127.0.0.3").status_code == 200


@pytest.mark.model
@pytest.mark.slow
def test_rotating_x_forwarded_for_does_not_dodge_the_limit(throttled_app):
    """Part three, row 9: the header was trusted from any loopback or private peer."""
    app = throttled_app
    codes = [
        attempt(app, f"name{i}", "wrong-guess", "127.0.0.5", f"203.0.113.{i}").status_code
        for i in range(6)
    ]
    assert codes[:3] == [400, 400, 400] and codes[-1] == 429, codes


@pytest.mark.model
@pytest.mark.slow
def test_x_forwarded_for_is_honoured_from_a_listed_proxy(throttled_app):
    """Behind a proxy named in --forwarded-allow-ips, the client is the forwarded address.

    The proxy appends the address it saw, so a client's own header value
    (the left part) is never taken for its address.
    """
    app = throttled_app
    proxy = "127.0.0.4"
    codes = [
        attempt(app, "bob", "nope", proxy, f"198.51.100.{i}, 192.0.2.7").status_code
        for i in range(5)
    ]
    assert codes[-1] == 429, codes  # one client, whatever it claims to be
    # Another client behind the same proxy is not held back.
    assert attempt(app, "bob", USERS["bob"], proxy, "192.0.2.8").status_code == 200


def test_forwarded_allow_ips_must_be_addresses_or_networks():
    assert load_config(["--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.1"], {})
    assert load_config([], {"CHAT_STUDIO_FORWARDED_ALLOW_IPS": "*"}).trusted_proxies() == "*"
    assert load_config([], {}).trusted_proxies() == ""
    with pytest.raises(ConfigError, match="not an IP address"):
        load_config(["--forwarded-allow-ips", "proxy.local"], {})


def test_on_a_space_the_platforms_proxy_is_trusted(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/chat-studio")
    trusted = load_config([], {}).trusted_proxies()
    assert "10.0.0.0/8" in trusted and "*" not in trusted  # the client is never the header's first
    assert load_config(["--forwarded-allow-ips", "10.1.2.3"], {}).trusted_proxies() == "10.1.2.3"


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
