"""API key generation, checksums and hashing: no ORM, no Django.

A key looks like ``mlp_<lookup:12>_<secret:40><checksum:6>``: a recognisable prefix, a public
lookup id for finding the row, 40 random base62 characters from ``secrets`` (about 238 bits),
and a CRC32 checksum so a mistyped or truncated key is refused without a database query.
Only a SHA-256 hash of the whole key is stored; the secret is high-entropy, so a slow password
hash would add latency to every request without adding safety.
"""

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

PREFIX = "mlp"
LOOKUP_LENGTH = 12
SECRET_LENGTH = 40
CHECKSUM_LENGTH = 6
ALPHABET = string.digits + string.ascii_letters

_KEY_RE = re.compile(
    rf"^{PREFIX}_(?P<lookup>[0-9A-Za-z]{{{LOOKUP_LENGTH}}})_"
    rf"(?P<secret>[0-9A-Za-z]{{{SECRET_LENGTH}}})(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    raw: str
    lookup: str
    hashed: str


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> GeneratedKey:
    lookup = _random(LOOKUP_LENGTH)
    body = f"{PREFIX}_{lookup}_{_random(SECRET_LENGTH)}"
    raw = body + checksum(body)
    return GeneratedKey(raw=raw, lookup=lookup, hashed=hash_key(raw))


def parse_lookup(raw: str) -> str | None:
    """The lookup id of a well-formed key with a valid checksum, else None."""
    match = _KEY_RE.match(raw)
    if match is None:
        return None
    body = raw[:-CHECKSUM_LENGTH]
    if not hmac.compare_digest(checksum(body), match["checksum"]):
        return None
    return match["lookup"]


def key_matches(raw: str, hashed: str) -> bool:
    return hmac.compare_digest(hash_key(raw), hashed)
