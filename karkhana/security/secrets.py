"""Generation and hashing of secrets.

Device and API tokens are 256-bit random values, so a fast SHA-256 digest is enough to store
them safely (nothing to brute-force) and lets every message be checked in microseconds.
Passwords chosen by people are weak by comparison and get argon2, which is slow on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
"""OWASP's argon2id baseline (19 MiB, 2 passes): sound, and quick enough on a Raspberry Pi."""
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def new_password() -> str:
    """A random password that is easy to read aloud and type on a phone."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    groups = ["".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4)]
    return "-".join(groups)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(token_digest(token), digest)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """Constant work whether or not the user exists (``hashed`` None checks a dummy hash)."""
    try:
        ok = _HASHER.verify(hashed or _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and hashed is not None


def load_or_create_secret(path: Path) -> bytes:
    """This installation's own secret (for CSRF tokens), created on first start, never in code."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def csrf_token(secret: bytes, session_token: str) -> str:
    """The CSRF token bound to one session: only a page that was told it can send it back."""
    return hmac.new(secret, session_token.encode(), hashlib.sha256).hexdigest()


MOSQUITTO_ITERATIONS = 101
"""What ``mosquitto_passwd`` of Mosquitto 2.0 uses; tokens are random, so more would add nothing."""


def mosquitto_hash(
    password: str, *, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS
) -> str:
    """``password`` in Mosquitto's password-file format: ``$7$<iterations>$<salt>$<hash>``,
    PBKDF2-SHA512 with a 12-byte salt and a 64-byte hash, both base64."""
    salt = secrets.token_bytes(12) if salt is None else salt
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(derived).decode()}"


def mosquitto_hash_matches(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, _derived = hashed.split("$")
        if kind != "7":
            return False
        expected = mosquitto_hash(
            password, salt=base64.b64decode(salt, validate=True), iterations=int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(expected, hashed)
