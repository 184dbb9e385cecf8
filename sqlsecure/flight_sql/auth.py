"""Who may call the endpoint: HTTP Basic credentials exchanged for a bearer token, checked on every call.

Flight SQL clients (ADBC, JDBC, the Go and C++ clients) authenticate the way Arrow's own servers
expect: the Handshake call carries `authorization: Basic base64(user:password)`, the server answers
with `authorization: Bearer <token>` in its headers, and every later call carries that bearer
token. The checking is done by a server middleware that sees every call's headers, Handshake
included; the Handshake itself has nothing left to do, but it must exist (a Flight server without
an auth handler refuses Handshake, and the clients call it), hence `HeaderHandshake`.

Every authenticated user acts as the server's one issuing party: the endpoint serves one party's
view of the federation, and the user names only appear in the server's log: each login, failed or
not, is logged at INFO with the user name (never the password).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.flight as flight

from sqlsecure.errors import ConfigError

log = logging.getLogger("sqlsecure.flight_sql")
AUTH_MIDDLEWARE = "sqlsecure-auth"  # the key handlers use to find the caller: context.get_middleware(AUTH_MIDDLEWARE)


class Credentials:
    """User names and their passwords; compared in constant time."""

    def __init__(self, users: dict[str, str]):
        if not users:
            raise ConfigError("no users: give --user and --password, or a password file with user:password lines")
        for user, password in users.items():
            if not user or ":" in user or not password:
                raise ConfigError(f"invalid credentials for user {user!r}: a user name without ':' and a password")
        self._users = {user: password.encode("utf-8") for user, password in users.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> Credentials:
        """Read `user:password` lines (blank lines and `#` comments ignored). Keep the file readable by the
        server's account only: the passwords are in clear, as with any Basic-auth password list."""
        path = Path(path)
        users: dict[str, str] = {}
        problems = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user or not password:
                problems.append(f"{path}:{number}: expected user:password")
            elif user in users:
                problems.append(f"{path}:{number}: user {user!r} listed twice")
            else:
                users[user] = password
        if problems:
            raise ConfigError(problems)
        return cls(users)

    def check(self, user: str, password: str) -> bool:
        expected = self._users.get(user)
        given = password.encode("utf-8")
        if expected is None:
            hmac.compare_digest(given, given)  # same work whether or not the user exists
            return False
        return hmac.compare_digest(expected, given)


class BearerTokens:
    """Random session tokens issued after a successful Basic login, valid for `ttl` seconds."""

    def __init__(self, ttl: float = 3600.0):
        self.ttl = ttl
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, user: str) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (user, now + self.ttl)
        return token

    def user_of(self, token: str) -> str | None:
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]


@dataclass
class Failures:
    count: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


EVERYONE = "\x00all users"  # the server-wide key: guessing one password for many user names is throttled too


class LoginThrottle:
    """Exponential backoff after repeated failed logins, per user name and server-wide.

    After `free` consecutive failures of a user name (`free_all` of all names together) each further
    failure blocks that name (or every login) for `base`, 2·`base`, 4·`base`... seconds, at most `cap`;
    a blocked attempt is refused without looking at its password. A success clears its user's count;
    failures older than `cap` are forgotten. Flight's middleware does not see the peer's address, so the
    server-wide count stands in for a per-peer one. `clock` is injectable so that tests need not sleep."""

    def __init__(self, free: int = 5, free_all: int = 100, base: float = 1.0, cap: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, max_names: int = 10_000):
        self.free, self.free_all, self.base, self.cap, self.clock = free, free_all, base, cap, clock
        self.max_names = max_names
        self._failures: dict[str, Failures] = {}
        self._lock = threading.Lock()

    def retry_after(self, user: str) -> float:
        """Seconds until `user` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            waits = [f.blocked_until - now for key in (user, EVERYONE) if (f := self._failures.get(key))]
        return max([0.0, *waits])

    def failed(self, user: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) >= self.max_names:
                self._forget_old(now)
            for key, free in ((user, self.free), (EVERYONE, self.free_all)):
                entry = self._failures.setdefault(key, Failures())
                if now - entry.last > self.cap:
                    entry.count = 0
                entry.count, entry.last = entry.count + 1, now
                if entry.count > free:
                    entry.blocked_until = now + min(self.cap, self.base * 2 ** (entry.count - free - 1))

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(user, None)

    def _forget_old(self, now: float) -> None:
        self._failures = {k: f for k, f in self._failures.items() if now - f.last <= self.cap or k == EVERYONE}


class Caller(flight.ServerMiddleware):
    """The authenticated caller of one call; sends the bearer token back when one was issued."""

    def __init__(self, user: str, token: str | None):
        self.user = user
        self._token = token

    def sending_headers(self):
        return {"authorization": f"Bearer {self._token}"} if self._token else {}


class HeaderAuthMiddlewareFactory(flight.ServerMiddlewareFactory):
    """Refuses every call without valid `Basic` credentials or a valid `Bearer` token."""

    def __init__(self, credentials: Credentials, tokens: BearerTokens, throttle: LoginThrottle | None = None):
        self.credentials = credentials
        self.tokens = tokens
        self.throttle = throttle or LoginThrottle()

    def start_call(self, info, headers):
        values = headers.get("authorization") or headers.get("Authorization") or []
        if not values:
            raise flight.FlightUnauthenticatedError(
                "authentication required: log in with a user name and password (Basic) or a bearer token")
        scheme, _, value = values[0].strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            encoded = value.strip()
            encoded += "=" * (-len(encoded) % 4)  # Go's clients send unpadded base64
            try:
                user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, password = "", "", ""
            wait = self.throttle.retry_after(user)
            if wait > 0:
                log.info("login of %r refused: too many failed logins (retry in %d s)", user, math.ceil(wait))
                raise flight.FlightUnauthenticatedError(
                    f"too many failed logins: retry in {math.ceil(wait)} s")
            if not sep or not self.credentials.check(user, password):
                self.throttle.failed(user)
                log.info("login of %r failed: invalid user name or password", user)
                raise flight.FlightUnauthenticatedError("invalid user name or password")
            self.throttle.succeeded(user)
            if info.method == flight.FlightMethod.HANDSHAKE:
                log.info("login of %r", user)
            # a token is issued on login (Handshake); other calls that carry Basic credentials are simply checked
            token = self.tokens.issue(user) if info.method == flight.FlightMethod.HANDSHAKE else None
            return Caller(user, token)
        if scheme == "bearer":
            user = self.tokens.user_of(value.strip())
            if user is None:
                log.info("call refused: invalid or expired bearer token")
                raise flight.FlightUnauthenticatedError("invalid or expired token: log in again")
            return Caller(user, None)
        raise flight.FlightUnauthenticatedError(f"unsupported authorization scheme {scheme!r}: use Basic or Bearer")


class HeaderHandshake(flight.ServerAuthHandler):
    """The Handshake of header-based authentication: nothing to exchange, the middleware checked the headers."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return ""
