"""Logins: credentials from the command line, a file or the environment, and a throttle.

Pure logic (no web framework): ``studio.web`` asks ``LoginThrottle`` before a
login is checked and tells it the outcome.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

MIN_PASSWORD = 8
WINDOW_S = 600.0  # failures older than this are forgotten
BASE_WAIT_S = 30.0
MAX_WAIT_S = 900.0


class CredentialsError(ValueError):
    """Credentials that must not be used; the message says how to fix them."""


def parse_credentials(text: str, where: str) -> list[tuple[str, str]]:
    """``USER:PASS`` pairs, one per line; blank lines and ``#`` comments are skipped."""
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise CredentialsError(f"{where}, line {number}: expected USER:PASS")
        user, _, password = line.partition(":")
        pairs.append(check_pair(user.strip(), password, f"{where}, line {number}"))
    return pairs


def check_pair(user: str, password: str, where: str) -> tuple[str, str]:
    """Refuse empty user names and short passwords."""
    if not user or any(c.isspace() for c in user):
        raise CredentialsError(f"{where}: the user name must be non-empty, without spaces")
    if len(password) < MIN_PASSWORD:
        raise CredentialsError(
            f"{where}: the password for {user!r} is shorter than {MIN_PASSWORD} characters; "
            "choose a longer one"
        )
    return user, password


def load_credentials(auth: str | None, auth_file: Path | None) -> list[tuple[str, str]]:
    """Every configured login: ``--auth USER:PASS`` and the lines of ``--auth-file``."""
    pairs: list[tuple[str, str]] = []
    if auth:
        if ":" not in auth:
            raise CredentialsError("--auth must look like USER:PASS")
        user, _, password = auth.partition(":")
        pairs.append(check_pair(user.strip(), password, "--auth"))
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialsError(
                f"--auth-file {auth_file}: cannot read it ({exc.strerror or exc})"
            ) from None
        found = parse_credentials(text, f"--auth-file {auth_file}")
        if not found:
            raise CredentialsError(f"--auth-file {auth_file}: no USER:PASS line in it")
        pairs += found
    users = [u for u, _ in pairs]
    dupes = sorted({u for u in users if users.count(u) > 1})
    if dupes:
        raise CredentialsError(f"user {dupes[0]!r} is listed twice; keep one password per user")
    return pairs


class LoginThrottle:
    """Counts failed logins per client address and per user name; imposes growing waits.

    After ``allowed`` failures within ten minutes, each further attempt from
    that address or for that user must wait 30 s, doubling per failure up to
    15 minutes. A success clears the user's and the address's record.
    """

    def __init__(self, allowed: int = 5, clock=time.monotonic):
        self.allowed = allowed
        self.clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and now - times[0] > WINDOW_S:
            times.popleft()
        return times

    def wait_s(self, address: str, user: str) -> float:
        """Seconds before another attempt is allowed (0 when it may go ahead)."""
        now = self.clock()
        with self._lock:
            waits = []
            for key in (f"ip:{address}", f"user:{user.lower()}"):
                times = self._recent(key, now)
                extra = len(times) - self.allowed
                if extra >= 0:
                    wait = min(MAX_WAIT_S, BASE_WAIT_S * 2 ** min(extra, 10))
                    waits.append(times[-1] + wait - now)
            return max([0.0, *waits])

    def failed(self, address: str, user: str) -> None:
        """Record a failed attempt."""
        now = self.clock()
        with self._lock:
            for key in (f"ip:{address}", f"user:{user.lower()}"):
                self._recent(key, now).append(now)

    def succeeded(self, address: str, user: str) -> None:
        """Forget the failures of this address and user."""
        with self._lock:
            self._failures.pop(f"ip:{address}", None)
            self._failures.pop(f"user:{user.lower()}", None)

    @staticmethod
    def message(wait: float) -> str:
        """The refusal shown to the client."""
        return (
            f"Too many failed logins. Try again in {math.ceil(wait)} s "
            "(check the user name and password)."
        )
