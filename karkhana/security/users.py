"""People who use karkhana: argon2-hashed passwords, opaque API tokens with an expiry.

There is no default password: the first admin gets KARKHANA_ADMIN_PASSWORD or a random one that
is printed once. API tokens are random and stored as digests, so a stolen database holds no
usable token and no signing key exists that could leak.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from karkhana.core.clock import SYSTEM_CLOCK, Clock
from karkhana.core.errors import Conflict, InvalidPayload, NotFound, Unauthorized
from karkhana.security.secrets import (
    hash_password,
    new_password,
    new_token,
    token_digest,
    verify_password,
)
from karkhana.store.database import Database

MIN_PASSWORD = 10


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    ENGINEER = "engineer"
    OPERATOR = "operator"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    user: User
    expires_ms: int


class Users:
    def __init__(
        self, db: Database, clock: Clock = SYSTEM_CLOCK, token_ttl_ms: int = 12 * 3_600_000
    ) -> None:
        self.db = db
        self.clock = clock
        self.token_ttl_ms = token_ttl_ms

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

    async def create(self, username: str, password: str, role: Role) -> User:
        if len(password) < MIN_PASSWORD:
            raise InvalidPayload(f"password: at least {MIN_PASSWORD} characters")
        if not username or len(username) > 64:
            raise InvalidPayload("username: 1-64 characters")
        hashed = await asyncio.to_thread(hash_password, password)
        now = self.clock.now_ms()

        def insert(conn: sqlite3.Connection) -> int:
            try:
                cur = conn.execute(
                    "INSERT INTO users (username, password_hash, role, created_ms) VALUES (?, ?, ?, ?)",
                    (username, hashed, role.value, now),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"user {username} already exists") from None
            return int(cur.lastrowid or 0)

        return User(await self.db.execute_write_fn(insert), username, role)

    async def login(self, username: str, password: str) -> IssuedToken:
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT id, username, role, password_hash FROM users WHERE username = ?",
                (username,),
            ).fetchone()
        )
        ok = await asyncio.to_thread(verify_password, password, row[3] if row else None)
        if not ok or row is None:
            raise Unauthorized("wrong username or password")
        user = User(row[0], row[1], Role(row[2]))
        token = new_token("kt")
        now = self.clock.now_ms()
        expires = now + self.token_ttl_ms

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM api_tokens WHERE expires_ms < ?", (now,))
            conn.execute(
                "INSERT INTO api_tokens (token_hash, user_id, created_ms, expires_ms) VALUES (?, ?, ?, ?)",
                (token_digest(token), user.id, now, expires),
            )

        await self.db.execute_write_fn(insert)
        return IssuedToken(token, user, expires)

    async def authenticate(self, token: str) -> User:
        now = self.clock.now_ms()
        row = await self.db.execute_read_fn(
            lambda c: c.execute(
                "SELECT u.id, u.username, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id"
                " WHERE t.token_hash = ? AND t.expires_ms > ?",
                (token_digest(token), now),
            ).fetchone()
        )
        if row is None:
            raise Unauthorized("missing, expired or revoked token")
        return User(row[0], row[1], Role(row[2]))

    async def set_password(self, username: str, password: str) -> None:
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

        await self.db.execute_write_fn(update)

    async def logout(self, token: str) -> None:
        await self.db.execute_write_fn(
            lambda c: c.execute(
                "DELETE FROM api_tokens WHERE token_hash = ?", (token_digest(token),)
            )
        )
