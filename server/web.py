"""The HTTP guard in front of Gradio's routes (a plain ASGI middleware).

Gradio leaves some doors open that a shared app must close:
- with logins on, some routes (the heartbeat that ends a session, cancel,
  streams) answer without one: every route but the login page's needs a login;
- failed logins are throttled per client address (never for other addresses);
- one upload request may carry only so many bytes and files, and uploads
  waiting to be ingested may take only so much disk; what an upload whose
  client went away mid-way had written is deleted at once;
- uploaded files are never served back over ``/file=``;
- pages get a Content-Security-Policy, so untrusted text can never make a
  visitor's browser fetch a remote image, video or frame.
It also notes which sessions have a browser tab open and which are listening
for their results, so work nobody waits for can be stopped, and ends each
REST call's own session once its result is read, so nothing is kept per call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path

from server import gradio_internals
from server.uploads import partial_uploads
from studio.auth import LoginThrottle

log = logging.getLogger("chat_studio")

CSP = (
    "img-src 'self' data: blob:; media-src 'self' data: blob:; object-src 'none'; "
    "frame-src 'self'; base-uri 'self'; form-action 'self'"
)
# Reachable without a login: the login page itself and what it needs to render.
OPEN_PATHS = (
    "/login",
    "/logout",
    "/assets/",
    "/static/",
    "/svelte/",
    "/favicon.ico",
    "/theme.css",
    "/robots.txt",
    "/manifest.json",
    "/pwa_icon",
    "/gradio_api/theme.css",
    "/gradio_api/login_check",
    "/gradio_api/user",
    "/gradio_api/token",
    "/gradio_api/app_id",
    "/gradio_api/startup-events",  # Gradio calls it itself at launch, without a login
)
LOGIN_BODY_MAX = 64 * 1024
GRACE_S = 5.0  # a REST caller posts, then opens the result stream: allow it this long


class Guard:
    """Settings and shared state of the middleware; one per app."""

    def __init__(
        self,
        logins: bool = False,
        throttle: LoginThrottle | None = None,
        upload_dir: str | Path | None = None,
        max_request_bytes: int = 50 * 2**20,
        max_files: int = 10,
        max_storage_bytes: int = 2**30,
        max_body_bytes: int = 16 * 2**20,
    ):
        self.logins = logins
        self.throttle = throttle or LoginThrottle()
        self.upload_dir = Path(upload_dir).resolve() if upload_dir else None
        self.max_request_bytes = max_request_bytes
        self.max_files = max_files
        self.max_storage_bytes = max_storage_bytes
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._tabs: dict[str, int] = defaultdict(int)  # open heartbeat streams per session
        self._listeners: dict[str, int] = defaultdict(int)  # open result streams
        self._last_listened: dict[str, float] = {}  # kept GRACE_S: older says nothing
        # REST calls that are sessions of their own: event id -> [posted, result read].
        self._calls: dict[str, list[float | None]] = {}
        self._over: dict[str, float] = {}  # REST call -> when it was first seen over
        self._queue = None  # Gradio's queue, to see whether a call's event is still running
        self._storage = (0.0, 0)  # (when measured, bytes)
        # Whether a login may use a session (``Access.may_use``); set by the app.
        self.may_use: Callable[[str, str | None], bool] = lambda session, user: True
        # Ends a session and forgets everything kept for it; set by the app.
        self.end_session: Callable[[str], None] = lambda session: None

    # -- what handlers ask ----------------------------------------------------------

    def connected(self, session: str) -> bool:
        """Whether a browser tab of ``session`` is open (its heartbeat stream is)."""
        with self._lock:
            return self._tabs.get(session, 0) > 0

    def listening(self, session: str, since: float) -> bool:
        """Whether someone reads ``session``'s results, or may still start to.

        ``since`` is when the request began (``time.monotonic()``): a caller
        gets ``GRACE_S`` to open its result stream.
        """
        now = time.monotonic()
        with self._lock:
            if self._listeners.get(session, 0) > 0:
                return True
            last = self._last_listened.get(session, since)
        return now - max(last, since) < GRACE_S

    @contextmanager
    def watch(self, session: str, cancel: threading.Event):
        """While the block runs, set ``cancel`` once nobody listens for ``session``'s results."""
        since = time.monotonic()
        finished = threading.Event()

        def loop():
            while not finished.wait(0.5):
                if not self.listening(session, since):
                    cancel.set()
                    return

        thread = threading.Thread(target=loop, daemon=True, name="listener-watch")
        thread.start()
        try:
            yield
        finally:
            finished.set()

    def _count(self, table: dict, key: str, delta: int) -> None:
        with self._lock:
            table[key] += delta
            if table is self._listeners:
                self._last_listened[key] = time.monotonic()
                if key in self._calls and delta < 0:
                    self._calls[key][1] = time.monotonic()
            if table[key] <= 0:
                del table[key]

    # -- REST calls: each is a session of its own, over once its result is read ----------

    def note_call(self, event_id: str, queue) -> None:
        """A REST call was queued; if it made its own session, end that session when done."""
        if gradio_internals.session_of_event(queue, event_id) != event_id:
            return  # it joined a session the caller named (or is gone): that one lives on
        with self._lock:
            self._queue = queue
            self._calls[event_id] = [time.monotonic(), None]

    def sweep(self) -> list[str]:
        """End the REST calls that are over; forget listeners older than ``GRACE_S``.

        A call is over when its event has finished and nobody reads its
        result: the reader went away, or never came within ``GRACE_S``.
        """
        now = time.monotonic()
        running = gradio_internals.running_event_ids(self._queue) if self._queue is not None else {}
        with self._lock:
            done = {
                session
                for session, (posted, read) in self._calls.items()
                if session not in running
                and self._listeners.get(session, 0) == 0
                and now - (read or posted) > (0 if read else GRACE_S)
            }
            # A call is ended GRACE_S after it was first seen over, so Gradio has long sent
            # (and the caller read) its last message before its tables are dropped.
            for session in list(self._over):
                if session not in done:
                    del self._over[session]
            for session in done:
                self._over.setdefault(session, now)
            over = [s for s in done if now - self._over[s] > GRACE_S]
            for session in over:
                del self._calls[session]
                del self._over[session]
            for session, last in list(self._last_listened.items()):
                if now - last > GRACE_S and session not in self._listeners:
                    del self._last_listened[session]
        for session in over:
            self.end_session(session)
        return over

    def tracked(self) -> dict[str, int]:
        """How many sessions each of the guard's tables holds (they stay bounded)."""
        with self._lock:
            return {
                "tabs": len(self._tabs),
                "listeners": len(self._listeners),
                "last_listened": len(self._last_listened),
                "calls": len(self._calls),
            }

    def start_sweeper(self, stop: threading.Event, period: float = 1.0) -> threading.Thread:
        """A daemon thread that runs ``sweep`` until ``stop`` is set."""

        def loop():
            while not stop.wait(period):
                try:
                    self.sweep()
                except Exception as exc:  # a failed clean-up must not stop the next ones
                    log.warning("ending finished REST calls failed: %s", exc)

        thread = threading.Thread(target=loop, daemon=True, name="call-sweeper")
        thread.start()
        return thread

    def note_upload(self, n_bytes: int) -> None:
        """Count an upload at once, before the next measurement of the folder."""
        with self._lock:
            when, used = self._storage
            self._storage = (when, used + n_bytes)

    def storage_used(self) -> int:
        """Bytes in the upload folder (measured at most every 2 s)."""
        if self.upload_dir is None:
            return 0
        when, used = self._storage
        if time.monotonic() - when > 2.0:
            used = 0
            if self.upload_dir.is_dir():
                used = sum(p.stat().st_size for p in self.upload_dir.rglob("*") if p.is_file())
            self._storage = (time.monotonic(), used)
        return used


class GuardMiddleware:
    """The ASGI side of ``Guard``: ``Middleware(GuardMiddleware, guard=guard)``."""

    def __init__(self, app, guard: Guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        g = self.guard
        if g.logins and not _open(path) and path not in ("/", "") and not _logged_in(scope):
            return await _reply(send, 401, {"detail": "Not authenticated: log in first."})
        if path.rstrip("/") == "/login" and scope["method"] == "POST" and g.logins:
            return await self._login(scope, receive, send)
        if path.endswith("/upload") and scope["method"] == "POST":
            refusal = self._upload_refusal(scope)
            if refusal:
                return await _reply(send, 413, {"detail": refusal})
            with partial_uploads() as deleted:
                await self._upload(scope, receive, send)
            if not deleted:  # a partial upload was deleted: it takes no space
                g.note_upload(int(_header(scope, b"content-length")))
            return
        if scope["method"] == "POST":
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > g.max_body_bytes:
                limit = g.max_body_bytes / 2**20
                return await _reply(
                    send, 413, {"detail": f"Request too large: at most {limit:.0f} MB."}
                )
        if scope["method"] == "POST" and "/call/" in path:
            return await self.app(scope, receive, _noting_call(send, scope, g))
        if "/file=" in path and g.upload_dir is not None and _under(path, g.upload_dir):
            return await _reply(send, 403, {"detail": "Uploaded files are not served back."})
        key = _stream_key(scope)
        if key is not None and not g.may_use(key[1], _user(scope)):
            return await _reply(send, 403, {"detail": "That session belongs to another login."})
        if key is not None:
            table = g._tabs if key[0] == "tab" else g._listeners
            g._count(table, key[1], +1)
            try:
                return await self.app(scope, receive, send)
            finally:
                g._count(table, key[1], -1)
        return await self.app(scope, receive, _with_csp(send))

    # -- login ------------------------------------------------------------------------

    async def _login(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > LOGIN_BODY_MAX:
                return await _reply(send, 413, {"detail": "Login form too large."})
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        user = (form.get("username") or [""])[0].strip()
        address = client_address(scope)
        throttle = self.guard.throttle
        wait = throttle.wait_s(address, user)
        if wait > 0:
            return await _reply(send, 429, {"detail": throttle.message(wait)})
        status = {}
        replayed = []

        async def replay():
            if replayed:  # the body was read: now only a disconnect can come
                return await receive()
            replayed.append(True)
            return {"type": "http.request", "body": body, "more_body": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, replay, watch)
        if status.get("code") == 200:
            throttle.succeeded(address, user)
        else:
            throttle.failed(address, user)

    # -- uploads ----------------------------------------------------------------------

    def _upload_refusal(self, scope) -> str | None:
        g = self.guard
        length = _header(scope, b"content-length")
        if length is None or not length.isdigit():
            return "Uploads must declare their size (Content-Length)."
        if int(length) > g.max_request_bytes:
            return (
                f"This upload is {int(length) / 2**20:.1f} MB; one request may carry at most "
                f"{g.max_request_bytes / 2**20:.0f} MB (--max-request-upload-mb). "
                "Send fewer files at a time."
            )
        if g.storage_used() + int(length) > g.max_storage_bytes:
            return (
                "The app's upload space is full for now (--max-upload-storage-mb); "
                "try again in a few minutes."
            )
        return None

    async def _upload(self, scope, receive, send):
        """Forward the upload while counting its parts; refuse it past ``max_files``."""
        boundary = _boundary(scope)
        if boundary is None:
            return await self.app(scope, receive, send)
        marker = b"--" + boundary
        state = {"parts": 0, "tail": b"", "over": False, "replied": False}
        max_files = self.guard.max_files

        async def counting():
            message = await receive()
            if message["type"] == "http.request":
                data = state["tail"] + message.get("body", b"")
                state["parts"] += data.count(marker)
                state["tail"] = data[-(len(marker) - 1) :] if len(marker) > 1 else b""
                # The closing marker also matches: more than max_files + 1 is too many.
                if state["parts"] > max_files + 1:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"]:
                return
            await send(message)

        try:
            await self.app(scope, counting, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await _reply(
                send,
                413,
                {
                    "detail": f"One request may carry at most {max_files} files "
                    "(--max-files-per-request)."
                },
            )


# -- helpers ------------------------------------------------------------------------------


def client_address(scope) -> str:
    """The client's address as the server resolved it.

    Uvicorn replaces the peer with the ``X-Forwarded-For`` client only for a
    peer listed in ``--forwarded-allow-ips`` (``server.launch.serve`` sets it),
    so a client cannot pick its own address by sending the header.
    """
    return (scope.get("client") or ("unknown", 0))[0]


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _open(path: str) -> bool:
    return any(path == p or path.startswith(p) for p in OPEN_PATHS)


def _logged_in(scope) -> bool:
    """Whether the request carries a valid Gradio login cookie."""
    return _user(scope) is not None


def _user(scope) -> str | None:
    """The user of the request's Gradio login cookie, if any."""
    app = scope.get("app")
    cookie_header = _header(scope, b"cookie")
    if app is None or not cookie_header:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except Exception:
        return None
    return gradio_internals.login_user(app, cookies)


def _boundary(scope) -> bytes | None:
    content_type = _header(scope, b"content-type") or ""
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


def _under(path: str, folder: Path) -> bool:
    """Whether the ``/file=`` target of ``path`` lies inside ``folder``."""
    target = urllib.parse.unquote(path.split("/file=", 1)[1])
    try:
        resolved = Path(target).resolve()
    except (OSError, ValueError):
        return True  # unreadable: refuse rather than guess
    return resolved == folder or folder in resolved.parents


def _stream_key(scope) -> tuple[str, str] | None:
    """("tab", session) for a heartbeat stream, ("listen", session) for a result stream."""
    if scope["method"] != "GET":
        return None
    path = scope["path"]
    if "/heartbeat/" in path:
        return "tab", path.rsplit("/heartbeat/", 1)[1].strip("/")
    if path.endswith("/queue/data"):
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session = (query.get("session_hash") or [""])[0]
        return ("listen", session) if session else None
    if "/call/" in path:
        event_id = path.rstrip("/").rsplit("/", 1)[1]
        return "listen", _session_of_event(scope.get("app"), event_id)
    return None


def _session_of_event(app, event_id: str) -> str:
    """The session an event belongs to (a REST call without one is its own session)."""
    return gradio_internals.session_of_event(gradio_internals.queue_of(app), event_id) or event_id


def _noting_call(send, scope, guard: Guard):
    """``send`` that tells the guard the event id a REST call was given."""
    status = {}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
        elif message["type"] == "http.response.body" and status.get("code") == 200:
            event_id = _event_id(message.get("body"))
            if event_id:
                guard.note_call(event_id, gradio_internals.queue_of(scope["app"]))
        await send(message)

    return wrapped


def _event_id(body: bytes | None) -> str | None:
    """The ``event_id`` of a queued call's answer (None for any other answer)."""
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        return None  # not a queued call's answer
    return answer.get("event_id") if isinstance(answer, dict) else None


def _with_csp(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            kinds = [v for k, v in headers if k.lower() == b"content-type"]
            if kinds and kinds[0].startswith(b"text/html"):
                headers.append((b"content-security-policy", CSP.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _reply(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
