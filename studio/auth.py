"""Logins: credentials from the command line, a file or the environment, and a throttle.

Pure logic (no web framework): ``server.web`` asks ``LoginThrottle`` before a
login is checked and tells it the outcome.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
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
    """Counts failed logins per client address; imposes growing waits on that address.

    After ``allowed`` failures from one address within ten minutes, each
    further attempt from that address must wait 30 s, doubling per failure up
    to 15 minutes. Another address is never held back, so a stranger's
    guesses cannot lock a user out (the address-and-user scheme of Django's
    django-axes; a user name is counted only for the address it came from). A
    success forgets that address's failures for that user only: logging in
    as oneself does not wipe the record of guessing someone else's password.
    IPv6 addresses count per /64 network, which one machine usually owns whole.
    """

    def __init__(self, allowed: int = 5, clock=time.monotonic, max_addresses: int = 65536):
        self.allowed = allowed
        self.clock = clock
        self.max_addresses = max_addresses
        # address -> (when, user) of its recent failures, oldest first; only as many
        # as the longest wait needs, and at most ``max_addresses`` addresses.
        self._failures: OrderedDict[str, deque[tuple[float, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[tuple[float, str]]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and now - times[0][0] > WINDOW_S:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def wait_s(self, address: str, user: str) -> float:
        """Seconds before another attempt from ``address`` is allowed (0: it may go ahead)."""
        now = self.clock()
        with self._lock:
            times = self._recent(address_key(address), now)
            extra = len(times) - self.allowed
            if extra < 0:
                return 0.0
            wait = min(MAX_WAIT_S, BASE_WAIT_S * 2 ** min(extra, 10))
            return max(0.0, times[-1][0] + wait - now)

    def failed(self, address: str, user: str) -> None:
        """Record a failed attempt."""
        now = self.clock()
        key = address_key(address)
        with self._lock:
            times = self._recent(key, now)
            if key not in self._failures:
                times = self._failures[key] = deque(maxlen=self.allowed + 11)
            times.append((now, user.lower()))
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, user: str) -> None:
        """Forget this address's failures for this user (not those for other names)."""
        key = address_key(address)
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                return
            kept = [t for t in times if t[1] != user.lower()]
            if kept:
                self._failures[key] = deque(kept, maxlen=times.maxlen)
            else:
                del self._failures[key]

    def tracked(self) -> int:
        """How many addresses have failures on record (bounded by ``max_addresses``)."""
        with self._lock:
            return len(self._failures)

    @staticmethod
    def message(wait: float) -> str:
        """The refusal shown to the client."""
        return (
            f"Too many failed logins. Try again in {math.ceil(wait)} s "
            "(check the user name and password)."
        )


def address_key(address: str) -> str:
    """What failures are counted under: the address, or its /64 network for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))
