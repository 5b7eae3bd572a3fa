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


def _libcrypto():
    """The system libcrypto through ctypes (owsync.core.ossl), or None: then
    the cryptography package serves."""
    # lazy, for memory: ctypes is not worth its import for the CLI's other commands
    from . import ossl

    return ossl.load()


def aesgcm(key: bytes):
    """AES-256-GCM of ``key`` that takes bytes, bytearrays and memoryviews;
    its ``decrypt`` raises :func:`invalid_tag`'s exception."""
    lib = _libcrypto()
    if lib is not None:
        from .ossl import AESGCM as OsslAESGCM  # loaded by _libcrypto already

        return OsslAESGCM(lib, key)
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


def invalid_tag() -> type[Exception]:
    """What an :func:`aesgcm`'s decrypt raises for a payload that does not authenticate."""
    if _libcrypto() is not None:
        from .ossl import InvalidTag as OsslInvalidTag  # loaded by _libcrypto already

        return OsslInvalidTag
    from cryptography.exceptions import InvalidTag  # lazy: as in aesgcm

    return InvalidTag


class _CryptographySealer:
    """cryptography's streaming GCM encryptor, as ossl.Sealer is called."""

    def __init__(self, key: bytes, nonce: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # as aesgcm

        self._enc = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()

    def update(self, piece) -> bytes:
        return self._enc.update(piece)

    def finish(self) -> bytes:
        return self._enc.finalize() + self._enc.tag


def gcm_sealer(key: bytes, nonce: bytes):
    """AES-256-GCM sealing piece by piece: ``update(piece)``, then ``finish()``
    for what remains and the tag."""
    lib = _libcrypto()
    if lib is not None:
        from .ossl import Sealer  # loaded by _libcrypto already

        return Sealer(lib, key, nonce)
    return _CryptographySealer(key, nonce)


class _AeadFrames:
    """cryptography's AESGCM (or ossl's, where FrameCipher is not there), as
    ossl.FrameCipher is called."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = aesgcm(key)

    def seal_frame(self, nonce: bytes, header: bytes, body) -> bytes:
        return header + self._aead.encrypt(nonce, body, header)

    def open_frame(self, nonce: bytes, src, pos: int, head: int, n: int) -> bytes:
        start = pos + head
        return self._aead.decrypt(nonce, memoryview(src)[start : start + n], src[pos:start])


def frame_cipher(key: bytes, encrypt: bool):
    """AES-256-GCM of one key in one direction, for the frames of one writer or
    reader (one thread at a time): ``seal_frame(nonce, header, body)`` gives
    ``header || ciphertext || tag``; ``open_frame(nonce, src, pos, head, n)``
    the plaintext of the frame at ``pos`` in ``src`` (``head`` bytes of
    header, the associated data, then ``n`` of ciphertext and tag), raising
    :func:`invalid_tag`'s exception if it does not authenticate."""
    if len(key) != 32:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    lib = _libcrypto()
    if lib is not None:
        from .ossl import FrameCipher  # loaded by _libcrypto already

        return FrameCipher(lib, key, encrypt)
    return _AeadFrames(key)


def hkdf_sha256(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869); ``salt`` None is a zero salt, as cryptography's."""
    import hashlib  # lazy: as in fingerprint
    import hmac

    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 gives 1 to 8160 bytes")
    prk = hmac.digest(salt or bytes(32), ikm, hashlib.sha256)
    out, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes((i,)), hashlib.sha256)
        out += block
    return out[:length]


def x25519_public(secret: bytes) -> bytes:
    """The public key of a 32-byte X25519 secret."""
    lib = _libcrypto()
    if lib is not None:
        return lib.x25519_public(secret)
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # as aesgcm
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = X25519PrivateKey.from_private_bytes(secret)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_shared(secret: bytes, peer_public: bytes) -> bytes:
    """The X25519 shared secret; ValueError where the peer's key is refused
    (the caller also refuses an all-zero result: a low-order key)."""
    lib = _libcrypto()
    if lib is not None:
        return lib.x25519_shared(secret, peer_public)
    from cryptography.hazmat.primitives.asymmetric.x25519 import (  # lazy: as in aesgcm
        X25519PrivateKey,
        X25519PublicKey,
    )

    return X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )


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
        self._invalid_tag = invalid_tag()
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
        sealer = gcm_sealer(self._key, nonce)
        out = [nonce, *(sealer.update(p) for p in parts)]
        out.append(sealer.finish())
        return out

    def open(self, payload: bytes) -> bytes:
        if len(payload) < NONCE + TAG:
            raise AuthError("frame too short to be encrypted")
        view = memoryview(payload)  # no copy of a large frame's body
        try:
            if hasattr(self._aead, "open_sealed"):  # libcrypto's: reads a bytes payload in place
                return self._aead.open_sealed(payload)
            return self._aead.decrypt(view[:NONCE], view[NONCE:], None)
        except self._invalid_tag:
            raise AuthError("decryption failed: wrong key, or the peer is in plain mode") from None


def make_cipher(key: bytes | None):
    return AesGcmCipher(key) if key is not None else PlainCipher()
