"""Frame payload protection: AES-256-GCM with a pre-shared key, or plain.

A sealed payload is ``nonce(12) || ciphertext || tag(16)`` with a fresh
random nonce and no associated data, as owsync 1.2.0 sends it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

NONCE = 12
TAG = 16
STREAM_OVER = 1024 * 1024  # larger payloads are sealed piece by piece, not joined first


class AuthError(Exception):
    """A frame did not decrypt: wrong key, plain peer, or tampering."""


def parse_key(text: str) -> bytes:
    """32 bytes from 64 hex characters; ValueError with a clear message otherwise."""
    text = text.strip()
    if len(text) != 64:
        raise ValueError(
            "encryption key must be 64 hex characters (generate one with 'owsync genkey')"
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError("encryption key must be 64 hex characters (0-9, a-f)") from None


def fingerprint(key: bytes) -> str:
    """What admins compare across routers: 64 bits of a hash of the key, not the key."""
    import hashlib  # lazy: it loads OpenSSL (some 3 MiB); the CLI imports this module

    h = hashlib.sha256(b"owsync key fingerprint\0" + key).hexdigest()[:16]
    return ":".join(h[i : i + 4] for i in range(0, 16, 4))


class _BytesOnly:
    """An AEAD of a cryptography release (before 39) that takes only bytes: it
    is handed copies of the memoryviews and bytearrays the framing passes."""

    __slots__ = ("_aead",)

    def __init__(self, aead) -> None:
        self._aead = aead

    def encrypt(self, nonce, data, associated):
        return self._aead.encrypt(bytes(nonce), bytes(data), _bytes(associated))

    def decrypt(self, nonce, data, associated):
        return self._aead.decrypt(bytes(nonce), bytes(data), _bytes(associated))


def _bytes(b):
    return None if b is None else bytes(b)


_BUFFERS_OK: bool | None = None  # whether this cryptography's AEADs take any buffer


def aesgcm(key: bytes):
    """AES-256-GCM of ``key`` that takes bytes, bytearrays and memoryviews."""
    # lazy: plain mode and the CLI's other commands do not load cryptography
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    global _BUFFERS_OK
    aead = AESGCM(key)
    if _BUFFERS_OK is None:
        try:
            aead.encrypt(bytes(NONCE), memoryview(b""), memoryview(b""))
            _BUFFERS_OK = True
        except TypeError:
            _BUFFERS_OK = False
    return aead if _BUFFERS_OK else _BytesOnly(aead)


class PlainCipher:
    encrypted = False
    key = None

    def seal_parts(self, parts: Iterable[bytes]) -> list[bytes]:
        return parts if isinstance(parts, list) else list(parts)

    def open(self, payload: bytes) -> bytes:
        return payload


class AesGcmCipher:
    encrypted = True

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._key = key
        self.key = key  # protocol v2 derives its session keys from it
        self._aead = aesgcm(key)
        self.fingerprint = fingerprint(key)

    def seal_parts(self, parts: Iterable[bytes]) -> list[bytes]:
        """``nonce || ciphertext || tag`` as pieces.

        A list of small parts is joined and sealed at once; an iterator (a
        large FileContent) is sealed piece by piece as it is produced.
        """
        nonce = os.urandom(NONCE)
        if isinstance(parts, list) and sum(len(p) for p in parts) <= STREAM_OVER:
            plaintext = parts[0] if len(parts) == 1 else b"".join(parts)
            return [nonce, self._aead.encrypt(nonce, plaintext, None)]
        # lazy: as in aesgcm
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        enc = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        out = [nonce, *(enc.update(p) for p in parts)]
        out.append(enc.finalize())
        out.append(enc.tag)
        return out

    def open(self, payload: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag  # lazy: as in aesgcm

        if len(payload) < NONCE + TAG:
            raise AuthError("frame too short to be encrypted")
        view = memoryview(payload)  # no copy of a large frame's body
        try:
            return self._aead.decrypt(view[:NONCE], view[NONCE:], None)
        except InvalidTag:
            raise AuthError("decryption failed: wrong key, or the peer is in plain mode") from None


def make_cipher(key: bytes | None):
    return AesGcmCipher(key) if key is not None else PlainCipher()
