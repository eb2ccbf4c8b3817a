"""Accounts: users and their passwords, alias tokens, and login sessions."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import uuid

from minixnat.store.clock import now_ms
from minixnat.store.db import Database, remembered_read
from minixnat.store.names import check_name
from minixnat.store.records import AliasToken, LoginSession, StoreError, User

TOKEN_LIFETIME_MS = 2 * 24 * 3600 * 1000


def _hash_password(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 60_000).hex()


class AccountTables(Database):
    """Users, alias tokens and login sessions."""

    # Verifying a password costs ~30 ms by design; clients that send Basic auth on every
    # request (pyxnat) would pay it each time.  Verified pairs are remembered by a hash.
    _verified: dict[str, str]

    def add_user(
        self,
        login: str,
        password: str,
        *,
        admin: bool = False,
        firstname: str = "",
        lastname: str = "",
        email: str = "",
    ) -> User:
        if not login or any(c in login for c in ":/ \t") or not login.isprintable():
            msg = f"invalid user name {login!r}: use letters, digits, '_', '-' or '.'"
            raise StoreError(msg)
        for name, value in (("first name", firstname), ("last name", lastname), ("email", email)):
            check_name(name, value)
        salt = secrets.token_hex(8)
        with self.transaction():
            self._exec(
                "INSERT INTO users (login, salt, password_hash, admin) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(login) DO UPDATE SET salt=excluded.salt, "
                "password_hash=excluded.password_hash, admin=excluded.admin",
                (login, salt, _hash_password(password, salt), int(admin)),
            )
            details = {"firstname": firstname, "lastname": lastname, "email": email}
            for column, value in details.items():
                if value:  # names: the column name is one of the three above, never input
                    self._exec(f"UPDATE users SET {column}=? WHERE login=?", (value, login))
        self._verified = {k: v for k, v in self._verified.items() if v != login}
        user = self.get_user(login)
        assert user is not None
        return user

    @remembered_read
    def get_user(self, login: str) -> User | None:
        row = self._one("SELECT rowid, * FROM users WHERE login=?", (login,))
        return _user(row) if row is not None else None

    def list_users(self) -> list[User]:
        return [_user(r) for r in self._q("SELECT rowid, * FROM users ORDER BY rowid")]

    def project_members(self, pid: str) -> list[tuple[User, str]]:
        """Every user with a role in ``pid``, and the role."""
        rows = self._q(
            "SELECT u.rowid, u.*, r.role FROM project_roles r JOIN users u ON u.login = r.login "
            "WHERE r.project=? ORDER BY u.rowid",
            (pid,),
        )
        return [(_user(r), str(r["role"])) for r in rows]

    def roles_of(self, login: str) -> list[tuple[str, str]]:
        """(project ID, role) of every project ``login`` has a role in."""
        rows = self._q("SELECT project, role FROM project_roles WHERE login=?", (login,))
        return [(str(r["project"]), str(r["role"])) for r in rows]

    def remove_role(self, pid: str, login: str) -> bool:
        with self.transaction():
            found = self._one(
                "SELECT 1 FROM project_roles WHERE project=? AND login=?", (pid, login)
            )
            self._exec("DELETE FROM project_roles WHERE project=? AND login=?", (pid, login))
        return found is not None

    def check_password(self, login: str, password: str) -> User | None:
        """The user, if ``password`` is theirs and the account is enabled."""
        key = hashlib.sha256(f"{login}\0{password}".encode()).hexdigest()
        if self._verified.get(key) == login:
            return self.get_user(login)
        row = self._one("SELECT * FROM users WHERE login=?", (login,))
        if row is None or not row["enabled"]:
            return None
        if not hmac.compare_digest(_hash_password(password, row["salt"]), row["password_hash"]):
            return None
        self._verified[key] = login
        return self.get_user(login)

    # -- login sessions ------------------------------------------------------------------
    # The table is the one truth about sessions: they survive a restart, and whatever
    # another process changes (a revoked token, a deleted user) counts at once.
    def add_session(self, sid: str, login: str, now_ms: int, token: str = "") -> None:
        """Remember a login session; ``token`` names the alias token it was opened with."""
        self._exec(
            "INSERT OR REPLACE INTO login_sessions (sid, login, created_ms, token, last_seen_ms) "
            "VALUES (?, ?, ?, ?, ?)",
            (sid, login, now_ms, token, now_ms),
        )

    @remembered_read  # every request asks; a login, a logout or a touch is a change
    def get_session(self, sid: str) -> LoginSession | None:
        row = self._one("SELECT login, token, last_seen_ms FROM login_sessions WHERE sid=?", (sid,))
        return LoginSession(row["login"], row["token"], row["last_seen_ms"]) if row else None

    def touch_session(self, sid: str, now_ms: int) -> None:
        self._exec("UPDATE login_sessions SET last_seen_ms=? WHERE sid=?", (now_ms, sid))

    def delete_session(self, sid: str) -> None:
        self._exec("DELETE FROM login_sessions WHERE sid=?", (sid,))

    def count_sessions(self, login: str) -> int:
        row = self._one("SELECT COUNT(*) FROM login_sessions WHERE login=?", (login,))
        return int(row[0]) if row else 0

    def site_secret(self, name: str) -> bytes:
        """A random key kept in the archive (created on first use)."""
        key = f"secret:{name}"
        with self.transaction():
            row = self._one("SELECT value FROM meta WHERE key=?", (key,))
            if row is None:
                value = secrets.token_hex(32)
                self._exec("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            else:
                value = row["value"]
        return bytes.fromhex(value)

    # -- alias tokens --------------------------------------------------------------------
    def issue_token(self, login: str, lifetime_ms: int = TOKEN_LIFETIME_MS) -> AliasToken:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        created = now_ms()
        token = AliasToken(
            alias=str(uuid.uuid4()),
            secret="".join(secrets.choice(alphabet) for _ in range(64)),
            login=login,
            created_ms=created,
            expires_ms=created + lifetime_ms,
            enabled=True,
        )
        self._exec(
            "INSERT INTO alias_tokens VALUES (?, ?, ?, ?, ?, 1)",
            (token.alias, token.secret, login, token.created_ms, token.expires_ms),
        )
        return token

    def get_token(self, alias: str) -> AliasToken | None:
        row = self._one("SELECT * FROM alias_tokens WHERE alias=?", (alias,))
        return _token(row) if row is not None else None

    def user_tokens(self, login: str) -> list[AliasToken]:
        rows = self._q("SELECT * FROM alias_tokens WHERE login=? AND enabled=1", (login,))
        return [_token(r) for r in rows]

    def token_valid(self, alias: str) -> bool:
        """Whether ``alias`` names a token that is enabled and not expired."""
        token = self.get_token(alias)
        return token is not None and token.enabled and token.expires_ms >= now_ms()

    def check_token(self, alias: str, secret: str) -> User | None:
        token = self.get_token(alias)
        if token is None or not self.token_valid(alias):
            return None
        if not hmac.compare_digest(token.secret, secret):
            return None
        return self.get_user(token.login)

    def invalidate_token(self, alias: str) -> bool:
        """Disable a token and end every login session opened with it."""
        with self.transaction():
            found = self._one("SELECT 1 FROM alias_tokens WHERE alias=?", (alias,)) is not None
            self._exec("UPDATE alias_tokens SET enabled=0 WHERE alias=?", (alias,))
            self._exec("DELETE FROM login_sessions WHERE token=?", (alias,))
        return found


def _user(row: sqlite3.Row) -> User:
    return User(
        row["login"],
        bool(row["admin"]),
        bool(row["enabled"]),
        row["firstname"],
        row["lastname"],
        row["email"],
        int(row["rowid"]),
    )


def _token(row: sqlite3.Row) -> AliasToken:
    return AliasToken(
        row["alias"],
        row["secret"],
        row["login"],
        row["created_ms"],
        row["expires_ms"],
        bool(row["enabled"]),
    )
