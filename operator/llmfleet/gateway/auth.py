"""API keys: loaded from a Secret mount or a file, kept only as SHA-256 hashes, looked up in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path


@dataclass(frozen=True)
class Key:
    name: str  # the tenant: cache partitions and limits are per key name
    digest: bytes

    @cached_property
    def label(self) -> str:
        """How metrics and logs name the key: the first 4 bytes of its hash, never the key."""
        return self.digest[:4].hex()


def digest(secret: str | bytes) -> bytes:
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).digest()


def _parse(name: str, value: str) -> Key:
    value = value.strip()
    if value.startswith("sha256:"):
        return Key(name, bytes.fromhex(value[len("sha256:") :]))
    return Key(name, digest(value))


class NoKeys(ValueError):
    """A keys directory or file was configured but holds no key: starting would silently turn auth off."""


class KeyStore:
    """Maps a presented bearer token to its key. Disabled only when no keys source is configured at all; a
    configured source without keys refuses to load (NoKeys)."""

    def __init__(self, keys: list[Key]) -> None:
        self._by_digest = {k.digest: k for k in keys}
        self.enabled = bool(keys)

    @classmethod
    def from_dir(cls, path: str | Path) -> KeyStore:
        """A Secret mounted as files: file name = key name, content = the key or sha256:<hex>."""
        keys = []
        for f in sorted(Path(path).iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.read_text().strip():
                keys.append(_parse(f.name, f.read_text()))
        if not keys:
            raise NoKeys(
                f"the API keys directory {path} holds no key (is the Secret empty?); the gateway refuses "
                "to start rather than serve without authentication"
            )
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | Path) -> KeyStore:
        """Lines of `name: key` (or `name: sha256:<hex>`)."""
        keys = []
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                name, _, value = line.partition(":")
                if not name.strip() or not value.strip():
                    raise NoKeys(f"{path}: the line {line.strip()!r} is not `name: key`")
                keys.append(_parse(name.strip(), value))
        if not keys:
            raise NoKeys(
                f"the API keys file {path} holds no key; the gateway refuses to start rather than serve "
                "without authentication"
            )
        return cls(keys)

    def check(self, token: bytes) -> Key | None:
        d = digest(token)
        key = self._by_digest.get(d)
        # The dict lookup finds the candidate by its hash; the final comparison is constant-time.
        if key is not None and hmac.compare_digest(key.digest, d):
            return key
        return None
