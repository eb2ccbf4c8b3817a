"""Who sent a request: HTTP Basic, alias tokens, and JSESSIONID login sessions.

As XNAT 1.8 (``xnat-rest-api.md`` §2): HTTP Basic on any request (user and password, or an
alias token's alias and secret); a ``JSESSIONID`` cookie from ``/data/services/auth``,
``/data/JSESSION`` or a Basic-authenticated ``GET /``; no credentials at all is the guest,
who sees public projects only.  A cookie that names an expired or unknown session gets 401
(with ``WWW-Authenticate``), never silent guest access, so a client learns its session died.
A session opened with an alias token ends when the token is invalidated or expires.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from minixnat.http.messages import HttpError, Request
from minixnat.store import Store, User
from minixnat.store.clock import Clock, SystemClock
from minixnat.store.records import LoginSession

REALM = 'Basic realm="XNAT"'
GUEST = "guest"


@dataclass(frozen=True)
class Caller:
    """The outcome of authentication: the user (None: the guest) and their session."""

    user: User | None
    sid: str | None
    token: str = ""  # the alias token in the Basic credentials, if that is what they were


def unauthorized(message: str) -> HttpError:
    return HttpError(401, message, [("WWW-Authenticate", REALM)])


class Authenticator:
    """Login sessions (kept in the store: a restart keeps them, and a token revoked by
    another process ends them at once) and the authentication step of every request."""

    def __init__(self, store: Store, session_ttl: float, clock: Clock | None = None) -> None:
        self.store = store
        self.session_ttl = session_ttl
        self.clock = clock or SystemClock()
        self.started = self.clock.monotonic()

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def uptime(self) -> float:
        """Seconds since this server started (by its clock)."""
        return self.clock.monotonic() - self.started

    # -- sessions ------------------------------------------------------------------------
    def new_session(self, login: str, cookies: list[tuple[str, str]], token: str = "") -> str:
        sid = secrets.token_hex(16).upper()
        self.store.add_session(sid, login, self._now_ms(), token)
        cookies.append(("JSESSIONID", sid))
        return sid

    def end_session(self, sid: str, cookies: list[tuple[str, str]]) -> None:
        self.store.delete_session(sid)
        cookies.append(("JSESSIONID", ""))

    def count_sessions(self, login: str) -> int:
        return self.store.count_sessions(login)

    def expiration_cookie(self, cookies: list[tuple[str, str]]) -> None:
        ttl_ms = int(self.session_ttl * 1000)
        cookies.append(("SESSION_EXPIRATION_TIME", f'"{self._now_ms()},{ttl_ms}"'))

    def _live(self, sid: str) -> LoginSession | None:
        """A session that is neither idle too long nor opened with a revoked token."""
        session = self.store.get_session(sid)
        if session is None:
            return None
        now = self._now_ms()
        idle_ms = now - session.last_seen_ms
        revoked = session.token and not self.store.token_valid(session.token)
        if idle_ms > self.session_ttl * 1000 or revoked:
            self.store.delete_session(sid)
            return None
        if idle_ms > self.session_ttl * 100:  # a write per tenth of the lifetime, not per use
            self.store.touch_session(sid, now)
        return session

    def session_user(self, sid: str) -> User | None:
        """The user of a live session (None for a dead one, or a guest's)."""
        session = self._live(sid)
        if session is None or session.login == GUEST:
            return None
        return self.store.get_user(session.login)

    # -- credentials -----------------------------------------------------------------------
    def check_password(self, login: str, password: str) -> User | None:
        """The login form takes passwords only; alias tokens are for scripts."""
        return self.store.check_password(login, password)

    def check_credentials(self, login: str, password: str) -> tuple[User | None, str]:
        """The user for a password or an alias token's secret, and the token's alias."""
        user = self.store.check_password(login, password)
        if user is not None:
            return user, ""
        user = self.store.check_token(login, password)
        return user, (login if user is not None else "")

    def authenticate(self, request: Request) -> Caller:
        """Who sent ``request``.  Wrong Basic credentials or a dead cookie: 401."""
        basic = _basic(request)
        sid = request.cookies.get("JSESSIONID")
        if basic is not None:
            user, token = self.check_credentials(*basic)
            if user is None:
                raise unauthorized("Login attempt failed. Please try again.")
            if sid and (current := self.session_user(sid)) and current.login == user.login:
                return Caller(user, sid, token)
            return Caller(user, None, token)
        if sid:
            session = self._live(sid)
            if session is None:
                raise unauthorized("Your session has expired or is unknown; log in again.")
            if session.login == GUEST:
                return Caller(None, sid)  # reads what the guest may read, as in XNAT
            user = self.store.get_user(session.login)
            if user is None:
                raise unauthorized("Your session's user no longer exists; log in again.")
            return Caller(user, sid)
        return Caller(None, None)


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except Exception as exc:
        raise unauthorized("Malformed Basic credentials.") from exc
    login, _, password = decoded.partition(":")
    return login, password
