"""Credentials: password hashing (scrypt), JWT access tokens, API keys, refresh tokens.

Pure functions; no I/O. Password hashing is CPU-heavy: call it off the reactor thread.
PyJWT is imported with the first token (0.35 MB of a process's RSS; a process that only
delivers images never needs it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

API_KEY_PREFIX = "sk_"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_TOKEN_TYPE = "access"


class InvalidToken(Exception):
    """An access token that is malformed, forged, of the wrong kind or expired."""


def hash_password(password: str) -> str:
    """A salted scrypt hash in the form ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches the stored hash (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


# Verifying against this keeps "no such user" as slow as "wrong password".
DUMMY_PASSWORD_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=64 * 1024 * 1024, dklen=64)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha256_hex(text: str) -> str:
    """Hash of a high-entropy secret (API key, refresh token) as stored in the database."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """A fresh ``sk_`` + 64 hex digits key."""
    return API_KEY_PREFIX + secrets.token_hex(32)


def looks_like_api_key(token: str) -> bool:
    body = token[len(API_KEY_PREFIX):]
    return (token.startswith(API_KEY_PREFIX) and len(body) == 64
            and all(c in "0123456789abcdef" for c in body))


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def issue_access_token(secret: bytes, algorithm: str, user_id: str, now: datetime,
                       ttl: timedelta, generation: int = 0) -> str:
    """A signed JWT naming ``user_id``, valid for ``ttl`` from ``now``, issued under the
    user's token ``generation`` (a newer one makes it worthless)."""
    claims = {"sub": user_id, "iat": now, "exp": now + ttl, "typ": _TOKEN_TYPE,
              "gen": generation, "jti": secrets.token_hex(8)}
    import jwt

    return jwt.encode(claims, secret, algorithm=algorithm)


def decode_access_token(secret: bytes, algorithm: str, token: str) -> tuple[str, int]:
    """The user id and token generation in a valid access token (0 for tokens from before
    generations); raises InvalidToken otherwise."""
    import jwt

    try:
        claims = jwt.decode(token, secret, algorithms=[algorithm],
                            options={"require": ["exp", "iat", "sub"]})
    except jwt.PyJWTError as e:
        raise InvalidToken(str(e)) from e
    generation = claims.get("gen", 0)
    if (claims.get("typ") != _TOKEN_TYPE or not isinstance(claims["sub"], str)
            or not isinstance(generation, int) or isinstance(generation, bool)):
        raise InvalidToken("not an access token")
    return claims["sub"], generation
