"""Who is calling, what they may touch, and when their session ends.

Every handler that reads or changes per-visitor data asks ``Access.caller``
first. A session is bound to the login that first used it, so a session hash
learnt by someone else is useless to them; private names (a session's document
collection) are keyed with a server secret, so they cannot be guessed from the
session hash either. Sessions without an open browser tab (API clients) end
after an idle time; ending a session runs the registered clean-ups.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chat.errors import ChatStudioError

log = logging.getLogger("chat_studio")


class AccessError(ChatStudioError):
    """The caller may not do this; the message says why."""


@dataclass(frozen=True)
class Caller:
    """One request's caller: its session, its login (if any), and whether it is an admin."""

    session: str
    user: str | None
    admin: bool


@dataclass
class _Session:
    user: str | None
    last_seen: float
    data: dict = field(default_factory=dict)


@dataclass
class _Browser:
    """A browser that holds a key this app signed: its tabs' sessions share its documents."""

    user: str | None
    sessions: set = field(default_factory=set)
    idle_since: float | None = None


class Access:
    """Callers, session ownership, admin rights and session expiry for one app instance."""

    def __init__(
        self,
        secret: bytes,
        logins: bool = False,
        admins: set[str] | frozenset[str] = frozenset(),
        private: bool = True,
        ttl_s: float = 1800.0,
        clock=time.monotonic,
    ):
        self.secret = secret
        self.logins = logins
        self.admins = frozenset(admins)
        self.private = private
        self.ttl_s = ttl_s
        self.clock = clock
        self.connected: Callable[[str], bool] = lambda session: False
        self._sessions: dict[str, _Session] = {}
        self._on_end: list[Callable[[str], None]] = []
        self._on_owner_end: list[Callable[[str], None]] = []
        self._browsers: dict[str, _Browser] = {}  # browser key -> its tabs
        self._owner: dict[str, str] = {}  # session -> browser key
        self._uploaded: dict[str, int] = {}  # owner -> bytes uploaded
        self._chunks: dict[str, int] = {}  # owner -> chunks embedded
        self._lock = threading.Lock()

    # -- callers ------------------------------------------------------------------

    def caller(self, request) -> Caller:
        """The caller of a Gradio request; binds a new session to its login.

        Raises ``AccessError`` when a login is required and missing, or when
        the session was opened by another login.
        """
        session = getattr(request, "session_hash", None) or ("api-" + secrets.token_hex(12))
        user = getattr(request, "username", None)
        if self.logins and not user:
            raise AccessError("Log in first: this app needs a user name and password.")
        now = self.clock()
        with self._lock:
            rec = self._sessions.get(session)
            if rec is None:
                rec = self._sessions[session] = _Session(user, now)
            elif rec.user != user:
                raise AccessError(
                    "This session belongs to another login; reload the page to start your own."
                )
            rec.last_seen = now
        return Caller(session, user, self.is_admin(user))

    def may_use(self, session: str, user: str | None) -> bool:
        """Whether ``user`` may act in ``session`` (a new one, or one opened by that login)."""
        with self._lock:
            rec = self._sessions.get(session)
            return rec is None or rec.user == user

    def is_admin(self, user: str | None) -> bool:
        """Admins: the listed logged-in users; on a private app without logins, its user."""
        if self.logins:
            return bool(user) and user in self.admins
        return self.private

    def require_admin(self, caller: Caller, what: str) -> None:
        """Raise ``AccessError`` unless ``caller`` is an admin."""
        if not caller.admin:
            who = "users named in --admins (who log in with --auth)"
            raise AccessError(f"Only admins may {what}: that is {who}.")

    # -- browsers: what outlives a reload ------------------------------------------

    def _sign(self, nonce: str, user: str | None) -> str:
        msg = f"browser\0{nonce}\0{user or ''}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()[:32]

    def browser_key(self, request, stored: str | None) -> str:
        """Bind the request's session to the browser holding ``stored`` (a key this app
        signed for this login) and return the key for the browser to keep. A missing, forged
        or other login's key is replaced by a fresh one: nobody reaches another's documents."""
        caller = self.caller(request)
        key = stored if isinstance(stored, str) and len(stored) < 100 else ""
        nonce, _, sig = key.partition(".")
        if not (nonce and hmac.compare_digest(sig, self._sign(nonce, caller.user))):
            nonce = secrets.token_hex(16)
            key = f"{nonce}.{self._sign(nonce, caller.user)}"
        with self._lock:
            rec = self._browsers.setdefault(key, _Browser(caller.user))
            previous = self._owner.get(caller.session)
            if previous and previous != key and previous in self._browsers:
                self._browsers[previous].sessions.discard(caller.session)
            rec.sessions.add(caller.session)
            rec.idle_since = None
            self._owner[caller.session] = key
        return key

    def owner(self, session: str) -> str:
        """Whose documents a session uses: its browser's key, else the session itself."""
        with self._lock:
            return self._owner.get(session, session)

    def on_owner_end(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(owner)`` when an owner's documents go: a session without a
        browser key when it ends; a browser ``ttl_s`` after its last tab closed."""
        self._on_owner_end.append(callback)

    def private_name(self, session: str, prefix: str = "session") -> str:
        """A per-session name nobody can derive without this app's secret."""
        digest = hmac.new(self.secret, session.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{prefix}-{digest[:40]}"

    def session_data(self, caller: Caller) -> dict:
        """A dict kept for the caller's session until it ends (per-session counters)."""
        with self._lock:
            rec = self._sessions.setdefault(caller.session, _Session(caller.user, self.clock()))
            return rec.data

    def add_upload(self, caller: Caller, n_bytes: int, limit: int) -> None:
        """Count ``n_bytes`` against the session's upload allowance, or refuse them."""
        with self._lock:
            owner = self._owner.get(caller.session, caller.session)
            uploaded = self._uploaded.get(owner, 0)  # a reload does not reset it
            if uploaded + n_bytes > limit:
                left = max(0, limit - uploaded)
                raise AccessError(
                    f"This session may upload {limit / 2**20:.0f} MB in all "
                    f"(--max-session-upload-mb); {left / 2**20:.1f} MB is left. Delete "
                    "documents you no longer need, or start a new session."
                )
            self._uploaded[owner] = uploaded + n_bytes

    def add_chunks(self, caller: Caller, n_chunks: int, limit: int) -> None:
        """Count ``n_chunks`` against the session's chunk allowance, or refuse them."""
        with self._lock:
            owner = self._owner.get(caller.session, caller.session)
            done = self._chunks.get(owner, 0)  # per owner: a reload does not reset it
            if done + n_chunks > limit:
                left = max(0, limit - done)
                raise AccessError(
                    f"this document makes {n_chunks:,} chunks; this session may add {limit:,} "
                    f"in all (--max-session-chunks) and {left:,} are left. Send only the "
                    "documents you need, or start a new session."
                )
            self._chunks[owner] = done + n_chunks

    # -- session ends -------------------------------------------------------------

    def on_end(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(session)`` whenever a session ends."""
        self._on_end.append(callback)

    def end(self, request) -> bool:
        """End the request's session, if the request comes from the session's own login.

        Gradio reports a closed tab through an unauthenticated route; a
        request from anyone but the session's owner is ignored.
        """
        session = getattr(request, "session_hash", None)
        user = getattr(request, "username", None)
        with self._lock:
            rec = self._sessions.get(session)
            if rec is None or rec.user != user or (self.logins and not user):
                return False
            del self._sessions[session]
        self._run_end(session)
        return True

    def sweep(self) -> list[str]:
        """End every session idle longer than the time-to-live with no open tab."""
        now = self.clock()
        with self._lock:
            stale = [
                s
                for s, rec in self._sessions.items()
                if now - rec.last_seen > self.ttl_s and not self.connected(s)
            ]
            for s in stale:
                del self._sessions[s]
            gone = [k for k, b in self._browsers.items()
                    if b.idle_since is not None and now - b.idle_since > self.ttl_s]  # fmt: skip
            for k in gone:
                del self._browsers[k]
        for s in stale:
            self._run_end(s)
        for k in gone:
            self._end_owner(k)
        return stale

    def live(self) -> list[str]:
        """The sessions not ended yet."""
        with self._lock:
            return list(self._sessions)

    def _run_end(self, session: str) -> None:
        for callback in self._on_end:
            try:
                callback(session)
            except Exception as exc:  # one failed clean-up must not skip the others
                log.warning("session clean-up failed: %s", exc)
        with self._lock:
            key = self._owner.pop(session, None)
            browser = self._browsers.get(key) if key else None
            if browser is not None:
                browser.sessions.discard(session)
                if not browser.sessions:
                    browser.idle_since = self.clock()  # kept ttl_s for a reload
        if key is None:
            self._end_owner(session)

    def _end_owner(self, owner: str) -> None:
        with self._lock:
            self._uploaded.pop(owner, None)
            self._chunks.pop(owner, None)
        for callback in self._on_owner_end:
            try:
                callback(owner)
            except Exception as exc:
                log.warning("clean-up failed: %s", exc)

    def start_sweeper(self, stop: threading.Event) -> threading.Thread:
        """A daemon thread that sweeps idle sessions until ``stop`` is set."""
        period = max(0.5, min(60.0, self.ttl_s / 4))

        def loop():
            while not stop.wait(period):
                self.sweep()

        thread = threading.Thread(target=loop, daemon=True, name="session-sweeper")
        thread.start()
        return thread
