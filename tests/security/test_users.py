from __future__ import annotations

from pathlib import Path

import pytest

from karkhana.core.clock import FakeClock
from karkhana.core.errors import Conflict, InvalidPayload, NotFound, Unauthorized
from karkhana.security.secrets import new_password, token_digest, verify_password
from karkhana.security.users import Role, Users
from karkhana.store.database import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(tmp_path / "k.db", synchronous="NORMAL")
    yield database
    database.close()


async def test_first_admin_gets_a_random_password_once(db: Database) -> None:
    users = Users(db)
    generated = await users.ensure_admin("")
    assert generated and len(generated) >= 16
    assert await users.ensure_admin("") is None  # never again
    issued = await users.login("admin", generated)
    assert issued.user.role is Role.ADMIN
    assert (await users.authenticate(issued.token)).username == "admin"


async def test_given_password_is_used_and_stored_hashed(db: Database) -> None:
    users = Users(db)
    assert await users.ensure_admin("a-long-password") is None
    stored = db.read(lambda c: c.execute("SELECT password_hash FROM users").fetchone()[0])
    assert stored.startswith("$argon2") and "a-long-password" not in stored
    with pytest.raises(Unauthorized):
        await users.login("admin", "a-long-passwore")


async def test_tokens_expire_and_are_stored_as_digests(db: Database) -> None:
    clock = FakeClock()
    users = Users(db, clock, token_ttl_ms=1000)
    await users.ensure_admin("a-long-password")
    issued = await users.login("admin", "a-long-password")
    digests = db.read(lambda c: [r[0] for r in c.execute("SELECT token_hash FROM api_tokens")])
    assert digests == [token_digest(issued.token)]
    clock.advance(1001)
    with pytest.raises(Unauthorized):
        await users.authenticate(issued.token)


async def test_set_password_revokes_tokens(db: Database) -> None:
    users = Users(db)
    await users.ensure_admin("a-long-password")
    issued = await users.login("admin", "a-long-password")
    await users.set_password("admin", "another-long-one")
    with pytest.raises(Unauthorized):
        await users.authenticate(issued.token)
    await users.login("admin", "another-long-one")
    with pytest.raises(NotFound):
        await users.set_password("ghost", "another-long-one")
    with pytest.raises(InvalidPayload):
        await users.set_password("admin", "short")


async def test_duplicate_user(db: Database) -> None:
    users = Users(db)
    await users.create("op", "operator-password", Role.OPERATOR)
    with pytest.raises(Conflict):
        await users.create("op", "operator-password", Role.OPERATOR)


def test_secrets_helpers() -> None:
    assert new_password() != new_password()
    assert not verify_password("x", None)
