"""People who use karkhana: argon2-hashed passwords, roles, sites, and opaque tokens.

There is no default password: the first admin gets KARKHANA_ADMIN_PASSWORD or a random one that
is printed once. Tokens are random and stored as digests, so a stolen database holds no usable
token. Repeated wrong passwords lock the account for a growing time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import Conflict, InvalidPayload, NotFound, TooManyRequests, Unauthorized
from karkhana.security.audit import AuditLog
from karkhana.security.policy import Permission, Role
from karkhana.security.secrets import (
    hash_password,
    new_password,
    new_token,
    token_digest,
    verify_password,
)
from karkhana.store.database import Database

__all__ = ["IssuedToken", "LoginThrottle", "Role", "User", "Users"]

MIN_PASSWORD = 10


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role
    sites: frozenset[str] = frozenset()
    scopes: frozenset[Permission] | None = None
    """Set when the request came with an API token limited to some permissions."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    user: User
    expires_ms: int


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    username: str
    scopes: tuple[str, ...] | None
    created_ms: int
    expires_ms: int


class LoginThrottle:
    """Failed logins per username: after ``free`` failures each further one doubles the wait.

    Kept in memory and bounded: a restart forgets, which only ever shortens a lockout.
    """

    def __init__(self, free: int = 5, base_ms: int = 30_000, cap_ms: int = 15 * 60_000) -> None:
        self.free, self.base_ms, self.cap_ms = free, base_ms, cap_ms
        self._failures: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def check(self, username: str, now_ms: int) -> None:
        _, until = self._failures.get(username.lower(), (0, 0))
        if until > now_ms:
            wait = (until - now_ms + 999) // 1000
            raise TooManyRequests(
                f"too many failed logins; try again in {wait} s", retry_after=wait
            )

    def failed(self, username: str, now_ms: int) -> None:
        name = username.lower()
        count, _ = self._failures.pop(name, (0, 0))
        count += 1
        until = 0
        if count >= self.free:
            until = now_ms + min(self.cap_ms, self.base_ms * 2 ** (count - self.free))
        self._failures[name] = (count, until)
        while len(self._failures) > 10_000:
            self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        self._failures.pop(username.lower(), None)


def _scopes(text: str | None) -> frozenset[Permission] | None:
    return None if text is None else frozenset(Permission(s) for s in text.split(",") if s)


class Users:
    def __init__(
        self,
        db: Database,
        clock: Clock = SYSTEM_CLOCK,
        token_ttl_ms: int = 12 * 3_600_000,
        audit: AuditLog | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.token_ttl_ms = token_ttl_ms
        self.throttle = LoginThrottle()
        self.audit = audit

    def _audit(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        username: str,
        *,
        source: str | None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """Audit a change to a user in the transaction that makes it."""
        if self.audit is not None:
            self.audit.append(
                conn, actor, action, f"user:{username}", before=before, after=after, source=source
            )

    async def ensure_admin(self, password: str = "") -> str | None:
        """Create the first admin if there is no user; returns the password if it was generated."""
        count = await self.db.execute_read_fn(
            lambda c: c.execute("SELECT count(*) FROM users").fetchone()[0]
        )
        if count:
            return None
        generated = None
        if not password:
            password = generated = new_password()
        await self.create("admin", password, Role.ADMIN)
        return generated

    async def create(
        self,
        username: str,
        password: str,
        role: Role,
        sites: Iterable[str] = (),
        *,
        actor: str = "system",
        source: str | None = None,
    ) -> User:
        if len(password) < MIN_PASSWORD:
            raise InvalidPayload(f"password: at least {MIN_PASSWORD} characters")
        if not username or len(username) > 64:
            raise InvalidPayload("username: 1-64 characters")
        site_ids = frozenset(sites)
        hashed = await asyncio.to_thread(hash_password, password)
        now = self.clock.now_ms()

        def insert(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO users (username, password_hash, role, created_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (username, hashed, role.value, now),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"user {username} already exists") from None
            user_id = int(cur.lastrowid or 0)
            _set_sites(conn, user_id, site_ids)
            after = {"username": username, "role": role.value, "sites": sorted(site_ids)}
            self._audit(conn, actor, "user.create", username, source=source, after=after)
            return user_id

        return User(await self.db.execute_write_fn(insert), username, role, site_ids)

    async def set_sites(
        self,
        username: str,
        sites: Iterable[str],
        *,
        actor: str = "system",
        source: str | None = None,
    ) -> None:
        site_ids = frozenset(sites)

        def update(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise NotFound(f"no user {username}")
            before = [
                r[0]
                for r in conn.execute(
                    "SELECT site_id FROM user_sites WHERE user_id = ? ORDER BY site_id", (row[0],)
                )
            ]
            conn.execute("DELETE FROM user_sites WHERE user_id = ?", (row[0],))
            _set_sites(conn, row[0], site_ids)
            self._audit(
                conn,
                actor,
                "user.set_sites",
                username,
                source=source,
                before={"sites": before},
                after={"sites": sorted(site_ids)},
            )

        await self.db.execute_write_fn(update)

    async def everyone(self) -> list[User]:
        def read(conn: sqlite3.Connection) -> list[User]:
            sites: dict[int, set[str]] = {}
            for uid, sid in conn.execute("SELECT user_id, site_id FROM user_sites"):
                sites.setdefault(uid, set()).add(sid)
            return [
                User(uid, name, Role(role), frozenset(sites.get(uid, ())))
                for uid, name, role in conn.execute(
                    "SELECT id, username, role FROM users ORDER BY username"
                )
            ]

        return await self.db.execute_read_fn(read)

    async def get(self, username: str) -> User:
        row = await self.db.execute_read_fn(
            lambda c: c.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
        )
        if row is None:
            raise NotFound(f"no user {username}")
        try:
            return await self._user(row[0])
        except Unauthorized:
            raise NotFound(f"no user {username}") from None

    async def delete(
        self, username: str, *, actor: str = "system", source: str | None = None
    ) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT role FROM users WHERE username = ?", (username,)).fetchone()
            if conn.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount == 0:
                raise NotFound(f"no user {username}")
            before = {"username": username, "role": row[0]}
            self._audit(conn, actor, "user.delete", username, source=source, before=before)

        await self.db.execute_write_fn(delete)

    async def login(
        self, username: str, password: str, *, source: str | None = None
    ) -> IssuedToken:
        """``source`` (the client's address) goes into the audit log with the outcome."""
        now = self.clock.now_ms()
        try:
            self.throttle.check(username, now)
        except TooManyRequests:
            await self._login_refused(username, source, "locked", None)
            raise
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT id, username, role, password_hash FROM users WHERE username = ?",
                (username,),
            ).fetchone()
        )
        ok = await asyncio.to_thread(verify_password, password, row[3] if row else None)
        if not ok or row is None:
            self.throttle.failed(username, now)
            await self._login_refused(username, source, "wrong username or password", row)
            raise Unauthorized("wrong username or password")
        self.throttle.succeeded(username)
        user = await self._user(row[0])
        issued = await self._issue(user.id, "login", None, None, self.token_ttl_ms)
        if self.audit is not None:
            await self.audit.record(
                user.username, "auth.login", f"user:{user.username}", source=source
            )
        return IssuedToken(issued, user, now + self.token_ttl_ms)

    async def _login_refused(
        self, username: str, source: str | None, reason: str, row: object
    ) -> None:
        """Audit a refused login; attempts under unknown names share one throttle per address,
        so that guessing many names cannot fill the disk."""
        if self.audit is None:
            return
        known = row is not None or reason == "locked"
        await self.audit.refused(
            username,
            "auth.login",
            f"user:{username}",
            source=source,
            details={"reason": reason, "known_user": row is not None},
            burst=5,
            key=("auth.login", username if known else None, source),
        )

    async def _issue(
        self, user_id: int, kind: str, name: str | None, scopes: str | None, ttl_ms: int
    ) -> str:
        token = new_token("kt")
        now = self.clock.now_ms()

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM api_tokens WHERE expires_ms < ?", (now,))
            conn.execute(
                "INSERT INTO api_tokens (token_hash, user_id, created_ms, expires_ms, kind, name,"
                " scopes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_digest(token), user_id, now, now + ttl_ms, kind, name, scopes),
            )

        await self.db.execute_write_fn(insert)
        return token

    async def create_api_token(
        self,
        user: User,
        name: str,
        scopes: Iterable[Permission] | None,
        ttl_ms: int,
        *,
        source: str | None = None,
    ) -> tuple[ApiToken, str]:
        """A long-lived token for an integration, limited to ``scopes`` (None: the user's role)."""
        if not name or len(name) > 100:
            raise InvalidPayload("name: 1-100 characters")
        text = None if scopes is None else ",".join(sorted(s.value for s in scopes))
        token = await self._issue(user.id, "api", name, text, ttl_ms)
        now = self.clock.now_ms()
        info = ApiToken(
            token_digest(token)[:16],
            name,
            user.username,
            None if text is None else tuple(text.split(",")),
            now,
            now + ttl_ms,
        )
        if self.audit is not None:
            await self.audit.record(
                user.username,
                "api_token.create",
                f"api_token:{info.id}",
                after={"name": name, "scopes": info.scopes, "expires_ms": info.expires_ms},
                source=source,
            )
        return info, token

    async def api_tokens(self, user: User | None = None) -> list[ApiToken]:
        """API tokens that have not expired: the user's own, or everyone's when None."""
        now = self.clock.now_ms()

        def read(conn: sqlite3.Connection) -> list[ApiToken]:
            sql = (
                "SELECT t.token_hash, t.name, u.username, t.scopes, t.created_ms, t.expires_ms"
                " FROM api_tokens t JOIN users u ON u.id = t.user_id"
                " WHERE t.kind = 'api' AND t.expires_ms > ?"
            )
            args: tuple[object, ...] = (now,)
            if user is not None:
                sql += " AND u.id = ?"
                args = (now, user.id)
            return [
                ApiToken(h[:16], n, u, None if s is None else tuple(s.split(",")), c, e)
                for h, n, u, s, c, e in conn.execute(sql + " ORDER BY t.created_ms", args)
            ]

        return await self.db.execute_read_fn(read)

    async def revoke_api_token(
        self,
        token_id: str,
        user: User | None = None,
        *,
        actor: str = "system",
        source: str | None = None,
    ) -> None:
        """Revoke by the id shown in listings; ``user`` limits it to their own tokens."""
        if len(token_id) != 16 or not all(c in "0123456789abcdef" for c in token_id):
            raise NotFound(f"no token {token_id}")

        def delete(conn: sqlite3.Connection) -> None:
            sql = "DELETE FROM api_tokens WHERE kind = 'api' AND substr(token_hash, 1, 16) = ?"
            args: tuple[object, ...] = (token_id,)
            if user is not None:
                sql += " AND user_id = ?"
                args = (token_id, user.id)
            if conn.execute(sql, args).rowcount == 0:
                raise NotFound(f"no token {token_id}")
            if self.audit is not None:
                self.audit.append(
                    conn, actor, "api_token.revoke", f"api_token:{token_id}", source=source
                )

        await self.db.execute_write_fn(delete)

    async def _user(self, user_id: int, scopes: frozenset[Permission] | None = None) -> User:
        def read(conn: sqlite3.Connection) -> User:
            row = conn.execute(
                "SELECT id, username, role FROM users WHERE id = ?", (user_id,)
            ).fetchone()
            if row is None:
                raise Unauthorized("the user no longer exists")
            sites = frozenset(
                r[0]
                for r in conn.execute(
                    "SELECT site_id FROM user_sites WHERE user_id = ?", (user_id,)
                )
            )
            return User(row[0], row[1], Role(row[2]), sites, scopes)

        return await self.db.execute_read_fn(read)

    async def authenticate(self, token: str) -> User:
        now = self.clock.now_ms()
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT user_id, scopes FROM api_tokens WHERE token_hash = ? AND expires_ms > ?",
                (token_digest(token), now),
            ).fetchone()
        )
        if row is None:
            raise Unauthorized("missing, expired or revoked token")
        return await self._user(row[0], _scopes(row[1]))

    async def set_password(
        self, username: str, password: str, *, actor: str = "system", source: str | None = None
    ) -> None:
        """Set a password and revoke the user's tokens (for an admin with access to the box)."""
        if len(password) < MIN_PASSWORD:
            raise InvalidPayload(f"password: at least {MIN_PASSWORD} characters")
        hashed = await asyncio.to_thread(hash_password, password)

        def update(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise NotFound(f"no user {username}")
            conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (hashed, row[0]))
            conn.execute("DELETE FROM api_tokens WHERE user_id = ?", (row[0],))
            self._audit(conn, actor, "user.set_password", username, source=source)

        await self.db.execute_write_fn(update)
        self.throttle.succeeded(username)

    async def logout(self, token: str, *, source: str | None = None) -> None:
        digest = token_digest(token)

        def delete(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT u.username FROM api_tokens t JOIN users u ON u.id = t.user_id"
                " WHERE t.token_hash = ?",
                (digest,),
            ).fetchone()
            conn.execute("DELETE FROM api_tokens WHERE token_hash = ?", (digest,))
            if row is not None:
                self._audit(conn, row[0], "auth.logout", row[0], source=source)

        await self.db.execute_write_fn(delete)


def _set_sites(conn: sqlite3.Connection, user_id: int, sites: frozenset[str]) -> None:
    for site_id in sorted(sites):
        if conn.execute("SELECT 1 FROM sites WHERE id = ?", (site_id,)).fetchone() is None:
            raise NotFound(f"no site {site_id}")
        conn.execute("INSERT INTO user_sites (user_id, site_id) VALUES (?, ?)", (user_id, site_id))
