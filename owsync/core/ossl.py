"""AES-256-GCM and X25519 from the system's libcrypto, through ctypes.

Why: cryptography releases before 42 (Debian 12's 38 among them) load their
whole OpenSSL backend for one AESGCM: x509, email, urllib, pkcs7, pkcs12,
ssh keys, some 14 MiB of RSS in every daemon, where owsync 1.2.0 rests at
3 MiB.  The libcrypto that hashlib (and cryptography) link is already in
the process; calling its EVP functions directly costs some 0.1 MiB.
``load()`` returns None where there is no libcrypto 1.1.1 or 3 to load
(or ``OWSYNC_WITHOUT=libcrypto`` is set, for the tests), and owsync then
uses cryptography as before (:mod:`owsync.core.crypto` picks).

Every pointer argument and result is declared, so that nothing is
truncated to an int; every context is freed in a ``finally``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

NONCE = 12
TAG = 16
_GCM_GET_TAG = 0x10  # EVP_CTRL_GCM_GET_TAG
_GCM_SET_TAG = 0x11  # EVP_CTRL_GCM_SET_TAG
_X25519 = 1034  # NID_X25519 / EVP_PKEY_X25519
_PIECE = 1 << 30  # EVP lengths are ints: larger inputs go in pieces

_P = ctypes.c_void_p
_INT = ctypes.c_int
_SIZE = ctypes.c_size_t

# name: (restype, argtypes)
_FUNCTIONS = {
    "ERR_clear_error": (None, []),
    "EVP_aes_256_gcm": (_P, []),
    "EVP_CIPHER_CTX_new": (_P, []),
    "EVP_CIPHER_CTX_free": (None, [_P]),
    "EVP_CIPHER_CTX_ctrl": (_INT, [_P, _INT, _INT, _P]),
    "EVP_EncryptInit_ex": (_INT, [_P, _P, _P, _P, _P]),
    "EVP_EncryptUpdate": (_INT, [_P, _P, ctypes.POINTER(_INT), _P, _INT]),
    "EVP_EncryptFinal_ex": (_INT, [_P, _P, ctypes.POINTER(_INT)]),
    "EVP_DecryptInit_ex": (_INT, [_P, _P, _P, _P, _P]),
    "EVP_DecryptUpdate": (_INT, [_P, _P, ctypes.POINTER(_INT), _P, _INT]),
    "EVP_DecryptFinal_ex": (_INT, [_P, _P, ctypes.POINTER(_INT)]),
    "EVP_PKEY_new_raw_private_key": (_P, [_INT, _P, _P, _SIZE]),
    "EVP_PKEY_new_raw_public_key": (_P, [_INT, _P, _P, _SIZE]),
    "EVP_PKEY_get_raw_public_key": (_INT, [_P, _P, ctypes.POINTER(_SIZE)]),
    "EVP_PKEY_free": (None, [_P]),
    "EVP_PKEY_CTX_new": (_P, [_P, _P]),
    "EVP_PKEY_CTX_free": (None, [_P]),
    "EVP_PKEY_derive_init": (_INT, [_P]),
    "EVP_PKEY_derive_set_peer": (_INT, [_P, _P]),
    "EVP_PKEY_derive": (_INT, [_P, _P, ctypes.POINTER(_SIZE)]),
}


class InvalidTag(Exception):
    """A sealed payload did not authenticate."""


class OpenSSLError(Exception):
    """A libcrypto call failed where it cannot for valid input."""


class _Slice:
    """``size`` bytes of a bytes object from ``start``, read in place."""

    __slots__ = ("data", "start", "size")

    def __init__(self, data: bytes, start: int, size: int) -> None:
        self.data, self.start, self.size = data, start, size


class _Buf:
    """The address of a buffer's bytes for the length of a call: no copy of
    bytes or of a writable buffer; a read-only view of something else is copied."""

    __slots__ = ("addr", "size", "_keep")

    def __init__(self, data) -> None:
        keep: object
        if isinstance(data, _Slice):
            keep = ctypes.c_char_p(data.data)
            self.addr = (ctypes.cast(keep, _P).value or 0) + data.start
            self.size = data.size
        elif isinstance(data, bytes):
            keep = ctypes.c_char_p(data)
            self.addr = ctypes.cast(keep, _P).value or 0
            self.size = len(data)
        else:
            mv = memoryview(data).cast("B")
            if mv.readonly:
                keep = ctypes.c_char_p(bytes(mv))
                self.addr = ctypes.cast(keep, _P).value or 0
            else:
                keep = (ctypes.c_char * mv.nbytes).from_buffer(mv)
                self.addr = ctypes.addressof(keep)
            self.size = mv.nbytes
        self._keep = keep


class Lib:
    """The libcrypto functions owsync calls.  A call that fails clears the
    thread's OpenSSL error queue, so that nothing stale is left there for
    hashlib or cryptography to find."""

    ERR_clear_error: Callable[..., Any]
    EVP_aes_256_gcm: Callable[..., Any]
    EVP_CIPHER_CTX_new: Callable[..., Any]
    EVP_CIPHER_CTX_free: Callable[..., Any]
    EVP_CIPHER_CTX_ctrl: Callable[..., Any]
    EVP_EncryptInit_ex: Callable[..., Any]
    EVP_EncryptUpdate: Callable[..., Any]
    EVP_EncryptFinal_ex: Callable[..., Any]
    EVP_DecryptInit_ex: Callable[..., Any]
    EVP_DecryptUpdate: Callable[..., Any]
    EVP_DecryptFinal_ex: Callable[..., Any]
    EVP_PKEY_new_raw_private_key: Callable[..., Any]
    EVP_PKEY_new_raw_public_key: Callable[..., Any]
    EVP_PKEY_get_raw_public_key: Callable[..., Any]
    EVP_PKEY_free: Callable[..., Any]
    EVP_PKEY_CTX_new: Callable[..., Any]
    EVP_PKEY_CTX_free: Callable[..., Any]
    EVP_PKEY_derive_init: Callable[..., Any]
    EVP_PKEY_derive_set_peer: Callable[..., Any]
    EVP_PKEY_derive: Callable[..., Any]

    def __init__(self, dll: ctypes.CDLL) -> None:
        for name, (restype, argtypes) in _FUNCTIONS.items():
            fn = getattr(dll, name)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        self.gcm = self.EVP_aes_256_gcm()
        # the same functions undeclared and holding the GIL, for FrameCipher's
        # calls of a microsecond or two: no other thread is let in five times
        # per frame (PyDLL's functions keep it; dll[name] is a new object)
        keep_gil = ctypes.PyDLL(dll._name, handle=dll._handle)
        self.raw = {name: keep_gil[name] for name in _RAW}
        for name in _RAW:
            self.raw[name].restype = None if name == "ERR_clear_error" else _INT
        probe = b"owsync"
        self.direct_addresses = id(probe) + _BYTES_DATA == _bytes_address(probe)

    # --- AES-256-GCM ---------------------------------------------------------

    def _cipher_ctx(self, key: bytes, nonce, encrypt: bool):
        if len(key) != 32 or len(nonce) != NONCE:
            raise ValueError("AES-256-GCM needs a 32-byte key and a 12-byte nonce")
        ctx = self.EVP_CIPHER_CTX_new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new")
        init = self.EVP_EncryptInit_ex if encrypt else self.EVP_DecryptInit_ex
        iv = nonce if type(nonce) is bytes else _Buf(nonce).addr
        if init(ctx, self.gcm, None, key, iv) != 1:
            self.EVP_CIPHER_CTX_free(ctx)
            raise OpenSSLError("EVP_CipherInit_ex")
        return ctx

    def _update(self, fn, ctx, data, out, at: int = 0, size: int | None = None) -> int:
        """Feeds ``data`` (AAD when ``out`` is None), its first ``size`` bytes
        if given; returns the bytes written."""
        src = _Buf(data)
        total = src.size if size is None else size
        n = ctypes.c_int(0)
        done = 0
        for off in range(0, total, _PIECE):
            size = min(_PIECE, total - off)
            dst = None if out is None else ctypes.addressof(out) + at + done
            if fn(ctx, dst, ctypes.byref(n), src.addr + off, size) != 1:
                raise OpenSSLError("EVP_CipherUpdate")
            done += n.value
        return done

    def seal(self, key: bytes, nonce, data, aad) -> bytes:
        """``ciphertext || tag``."""
        if type(data) is bytes and len(data) < _PIECE and type(nonce) is bytes:
            return self._seal_small(key, nonce, data, aad)
        ctx = self._cipher_ctx(key, nonce, True)
        try:
            if aad:
                self._update(self.EVP_EncryptUpdate, ctx, aad, None)
            size = memoryview(data).nbytes
            out = ctypes.create_string_buffer(size + TAG)
            done = self._update(self.EVP_EncryptUpdate, ctx, data, out)
            n = ctypes.c_int(0)
            if self.EVP_EncryptFinal_ex(ctx, ctypes.addressof(out) + done, ctypes.byref(n)) != 1:
                raise OpenSSLError("EVP_EncryptFinal_ex")
            tag = ctypes.addressof(out) + size
            if self.EVP_CIPHER_CTX_ctrl(ctx, _GCM_GET_TAG, TAG, tag) != 1:
                raise OpenSSLError("EVP_CTRL_GCM_GET_TAG")
            return out.raw
        finally:
            self.EVP_CIPHER_CTX_free(ctx)

    def _seal_small(self, key: bytes, nonce: bytes, data: bytes, aad) -> bytes:
        """seal() for one bytes payload under 1 GiB: the fewest calls and
        ctypes objects, since each frame of a session pays for them."""
        ctx = self._cipher_ctx(key, nonce, True)
        try:
            n = ctypes.c_int(0)
            ref = ctypes.byref(n)
            if aad:
                aad = bytes(aad)
                if self.EVP_EncryptUpdate(ctx, None, ref, aad, len(aad)) != 1:
                    raise OpenSSLError("EVP_EncryptUpdate")
            size = len(data)
            out = ctypes.create_string_buffer(size + TAG)
            base = ctypes.addressof(out)
            if self.EVP_EncryptUpdate(ctx, base, ref, data, size) != 1:
                raise OpenSSLError("EVP_EncryptUpdate")
            done = n.value
            if self.EVP_EncryptFinal_ex(ctx, base + done, ref) != 1:
                raise OpenSSLError("EVP_EncryptFinal_ex")
            if self.EVP_CIPHER_CTX_ctrl(ctx, _GCM_GET_TAG, TAG, base + size) != 1:
                raise OpenSSLError("EVP_CTRL_GCM_GET_TAG")
            return out.raw
        finally:
            self.EVP_CIPHER_CTX_free(ctx)

    def open(self, key: bytes, nonce, sealed, aad, start: int = 0) -> bytes:
        """The plaintext of ``ciphertext || tag`` (from ``start`` in ``sealed``,
        so that a bytes payload is read in place); InvalidTag if it does not
        authenticate."""
        if type(sealed) is bytes and len(sealed) < _PIECE:
            return self._open_small(key, bytes(nonce), sealed, aad, start)
        mv = memoryview(sealed).cast("B")
        if mv.nbytes - start < TAG:
            raise InvalidTag
        ctx = self._cipher_ctx(key, nonce, False)
        try:
            if aad:
                self._update(self.EVP_DecryptUpdate, ctx, aad, None)
            size = mv.nbytes - start - TAG
            out = ctypes.create_string_buffer(size or 1)
            if isinstance(sealed, bytes):
                body: object = _Slice(sealed, start, size)
            else:
                body = mv[start : start + size]
            done = self._update(self.EVP_DecryptUpdate, ctx, body, out, size=size)
            tag = ctypes.create_string_buffer(bytes(mv[start + size :]), TAG)
            if self.EVP_CIPHER_CTX_ctrl(ctx, _GCM_SET_TAG, TAG, tag) != 1:
                raise OpenSSLError("EVP_CTRL_GCM_SET_TAG")
            n = ctypes.c_int(0)
            scratch = ctypes.create_string_buffer(16)
            if self.EVP_DecryptFinal_ex(ctx, scratch, ctypes.byref(n)) != 1:
                self.ERR_clear_error()
                raise InvalidTag
            return out.raw[:done] if size else b""
        finally:
            self.EVP_CIPHER_CTX_free(ctx)

    def _open_small(self, key: bytes, nonce: bytes, sealed: bytes, aad, start: int) -> bytes:
        """open() of a bytes payload under 1 GiB, read in place: as _seal_small."""
        size = len(sealed) - start - TAG
        if size < 0:
            raise InvalidTag
        body = (ctypes.cast(ctypes.c_char_p(sealed), _P).value or 0) + start  # no copy
        ctx = self._cipher_ctx(key, nonce, False)
        try:
            n = ctypes.c_int(0)
            ref = ctypes.byref(n)
            if aad:
                aad = bytes(aad)
                if self.EVP_DecryptUpdate(ctx, None, ref, aad, len(aad)) != 1:
                    raise OpenSSLError("EVP_DecryptUpdate")
            out = ctypes.create_string_buffer(size or 1)
            base = ctypes.addressof(out)
            if self.EVP_DecryptUpdate(ctx, base, ref, body, size) != 1:
                raise OpenSSLError("EVP_DecryptUpdate")
            done = n.value
            if self.EVP_CIPHER_CTX_ctrl(ctx, _GCM_SET_TAG, TAG, body + size) != 1:
                raise OpenSSLError("EVP_CTRL_GCM_SET_TAG")
            if self.EVP_DecryptFinal_ex(ctx, base + done, ref) != 1:
                self.ERR_clear_error()
                raise InvalidTag
            if not size:
                return b""
            return out.raw if done == size else out.raw[:done]
        finally:
            self.EVP_CIPHER_CTX_free(ctx)

    # --- X25519 --------------------------------------------------------------

    def _pkey(self, raw: bytes, private: bool):
        if len(raw) != 32:
            raise ValueError("an X25519 key has 32 bytes")
        new = self.EVP_PKEY_new_raw_private_key if private else self.EVP_PKEY_new_raw_public_key
        key = new(_X25519, None, raw, 32)
        if not key:
            self.ERR_clear_error()
            raise ValueError("not an X25519 key")
        return key

    def x25519_public(self, secret: bytes) -> bytes:
        key = self._pkey(secret, True)
        try:
            out = ctypes.create_string_buffer(32)
            n = _SIZE(32)
            if self.EVP_PKEY_get_raw_public_key(key, out, ctypes.byref(n)) != 1 or n.value != 32:
                raise OpenSSLError("EVP_PKEY_get_raw_public_key")
            return out.raw
        finally:
            self.EVP_PKEY_free(key)

    def x25519_shared(self, secret: bytes, peer_public: bytes) -> bytes:
        """The shared secret; ValueError where libcrypto refuses it (a low-order key)."""
        key = self._pkey(secret, True)
        peer = ctx = None
        try:
            peer = self._pkey(peer_public, False)
            ctx = self.EVP_PKEY_CTX_new(key, None)
            if not ctx or self.EVP_PKEY_derive_init(ctx) != 1:
                raise OpenSSLError("EVP_PKEY_derive_init")
            if self.EVP_PKEY_derive_set_peer(ctx, peer) != 1:
                self.ERR_clear_error()
                raise ValueError("the peer's X25519 key is refused")
            out = ctypes.create_string_buffer(32)
            n = _SIZE(32)
            if self.EVP_PKEY_derive(ctx, out, ctypes.byref(n)) != 1 or n.value != 32:
                self.ERR_clear_error()
                raise ValueError("X25519 derivation failed (a low-order key?)")
            return out.raw
        finally:
            if ctx:
                self.EVP_PKEY_CTX_free(ctx)
            if peer:
                self.EVP_PKEY_free(peer)
            self.EVP_PKEY_free(key)


class Sealer:
    """AES-256-GCM sealing piece by piece: ``update`` for each piece of the
    plaintext, then ``finish`` for the tag (a large payload, never joined)."""

    __slots__ = ("_lib", "_ctx")

    def __init__(self, lib: Lib, key: bytes, nonce) -> None:
        self._lib = lib
        self._ctx = lib._cipher_ctx(key, nonce, True)

    def update(self, piece) -> bytes:
        out = ctypes.create_string_buffer(memoryview(piece).nbytes or 1)
        n = self._lib._update(self._lib.EVP_EncryptUpdate, self._ctx, piece, out)
        return out.raw[:n]

    def finish(self) -> bytes:
        """The tag; the context is freed."""
        lib, ctx = self._lib, self._ctx
        try:
            n = ctypes.c_int(0)
            scratch = ctypes.create_string_buffer(16)
            tag = ctypes.create_string_buffer(TAG)
            if lib.EVP_EncryptFinal_ex(ctx, scratch, ctypes.byref(n)) != 1:
                raise OpenSSLError("EVP_EncryptFinal_ex")
            if lib.EVP_CIPHER_CTX_ctrl(ctx, _GCM_GET_TAG, TAG, tag) != 1:
                raise OpenSSLError("EVP_CTRL_GCM_GET_TAG")
            return tag.raw
        finally:
            lib.EVP_CIPHER_CTX_free(ctx)
            self._ctx = None

    def __del__(self) -> None:  # a sealing abandoned midway
        if getattr(self, "_ctx", None):
            self._lib.EVP_CIPHER_CTX_free(self._ctx)


# Where a bytes object's data starts, from its id(): CPython's layout, checked
# at load() against ctypes (else every frame gets the address through ctypes).
_BYTES_DATA = bytes.__basicsize__ - 1
_RAW = ("EVP_EncryptInit_ex", "EVP_DecryptInit_ex", "EVP_Cipher", "EVP_CIPHER_CTX_ctrl",
        "ERR_clear_error")  # fmt: skip
_SMALL = 8 * 1024  # frames up to this size use the context's own output buffer


def _bytes_address(data: bytes) -> int:
    return ctypes.cast(ctypes.c_char_p(data), _P).value or 0


class FrameCipher:
    """AES-256-GCM of one key in one direction, frame after frame: the frames
    of one protocol2 FrameWriter or FrameReader.

    One EVP_CIPHER_CTX holds the key's schedule for the object's life.  A
    frame sets its nonce (EVP_*Init_ex with no cipher and no key), feeds the
    header as associated data and the body in one EVP_Cipher call each, and
    gets or sets the tag and finishes: five libcrypto calls.  Each ctypes call
    costs some 3,000 instructions, more than AES-GCM of 2 KiB; so they go
    through function objects without argtypes (every argument already a
    ctypes array, pointer, bytes, None or a small int: the context is an
    array at its address, which ctypes passes for the least), that keep the
    GIL, and EVP_Cipher takes one argument less than EVP_*Update and _Final.
    Frames up to 8 KiB are written into a buffer of the object's own and
    copied out once.  A context is not shared between threads: one object
    per writer or reader, used by one thread at a time.

    EVP_Cipher on GCM (a custom cipher, in 1.1.1 as in 3): associated data
    with no output returns its length, data its length, no input finishes
    and returns 0, or -1 where a tag does not match.
    """

    __slots__ = ("_raw", "_ctx", "_free", "_init", "_cipher", "_ctrl", "_clear",
                 "_out", "_view", "_direct", "_a", "_b", "_c")  # fmt: skip

    def __init__(self, lib: Lib, key: bytes, encrypt: bool) -> None:
        raw = lib.raw
        self._init = raw["EVP_EncryptInit_ex" if encrypt else "EVP_DecryptInit_ex"]
        self._cipher = raw["EVP_Cipher"]
        self._ctrl = raw["EVP_CIPHER_CTX_ctrl"]
        self._clear = raw["ERR_clear_error"]
        self._free = lib.EVP_CIPHER_CTX_free
        self._raw: int | None = lib._cipher_ctx(key, bytes(NONCE), encrypt)  # keyed once
        self._ctx = (ctypes.c_char * 1).from_address(self._raw)
        self._out: ctypes.Array | None = None  # made at the first small frame
        self._view: memoryview | None = None  # of _out, as bytes
        self._direct = lib.direct_addresses
        # pointers into a frame, set per call (cheaper than a new c_void_p each)
        self._a, self._b, self._c = _P(), _P(), _P()

    def __del__(self) -> None:
        ctx = getattr(self, "_raw", None)
        if ctx:
            self._raw = None
            self._free(ctx)

    def _buffer(self, size: int) -> tuple[ctypes.Array, memoryview]:
        """An output buffer of ``size`` bytes and a view of it: the object's
        own for a small frame."""
        if size > _SMALL + 64:
            out = ctypes.create_string_buffer(size)
            return out, memoryview(out).cast("B")
        if self._out is None or self._view is None:
            self._out = ctypes.create_string_buffer(_SMALL + 64)
            self._view = memoryview(self._out).cast("B")
        return self._out, self._view

    def seal_frame(self, nonce: bytes, header: bytes, body) -> bytes:
        """``header || ciphertext || tag``: the body sealed under ``nonce``,
        the header its associated data."""
        if type(body) is not bytes:
            body = bytes(body)
        head, size = len(header), len(body)
        if size >= _PIECE:
            raise ValueError("a frame body of 1 GiB or more")
        total = head + size + TAG
        out, view = self._out, self._view
        if total > _SMALL + 64 or out is None or view is None:
            out, view = self._buffer(total)
        base = ctypes.addressof(out)
        ctx, cipher, body_at, tag_at = self._ctx, self._cipher, self._a, self._b
        body_at.value, tag_at.value = base + head, base + head + size
        view[:head] = header
        if self._init(ctx, None, None, None, nonce) != 1:
            raise OpenSSLError("EVP_EncryptInit_ex")
        if cipher(ctx, None, header, head) != head:
            raise OpenSSLError("EVP_Cipher (associated data)")
        if size and cipher(ctx, body_at, body, size) != size:
            raise OpenSSLError("EVP_Cipher")
        if cipher(ctx, None, None, 0) != 0:
            raise OpenSSLError("EVP_Cipher (final)")
        if self._ctrl(ctx, _GCM_GET_TAG, TAG, tag_at) != 1:
            raise OpenSSLError("EVP_CTRL_GCM_GET_TAG")
        return view[:total].tobytes()

    def open_frame(self, nonce: bytes, src, pos: int, head: int, n: int) -> bytes:
        """The plaintext of the frame at ``pos`` in ``src``: ``head`` bytes of
        header (the associated data), then ``n`` bytes of ciphertext and tag,
        read in place when ``src`` is bytes.  InvalidTag if it does not
        authenticate."""
        size = n - TAG
        if size < 0:
            raise InvalidTag
        if n >= _PIECE:
            raise ValueError("a frame body of 1 GiB or more")
        if type(src) is not bytes:
            src, pos = bytes(memoryview(src)[pos : pos + head + n]), 0
        addr = (id(src) + _BYTES_DATA if self._direct else _bytes_address(src)) + pos
        out, view = self._out, self._view
        if size > _SMALL + 64 or out is None or view is None:
            out, view = self._buffer(size)
        ctx, cipher = self._ctx, self._cipher
        aad_at, body_at, tag_at = self._a, self._b, self._c
        aad_at.value, body_at.value, tag_at.value = addr, addr + head, addr + head + size
        if self._init(ctx, None, None, None, nonce) != 1:
            raise OpenSSLError("EVP_DecryptInit_ex")
        if cipher(ctx, None, aad_at, head) != head:
            raise OpenSSLError("EVP_Cipher (associated data)")
        if size and cipher(ctx, out, body_at, size) != size:
            raise OpenSSLError("EVP_Cipher")
        if self._ctrl(ctx, _GCM_SET_TAG, TAG, tag_at) != 1:
            raise OpenSSLError("EVP_CTRL_GCM_SET_TAG")
        if cipher(ctx, None, None, 0) != 0:
            self._clear()
            raise InvalidTag
        return view[:size].tobytes()


class AESGCM:
    """AES-256-GCM of one key, as cryptography's AESGCM is called."""

    __slots__ = ("_lib", "_key")

    def __init__(self, lib: Lib, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._lib, self._key = lib, bytes(key)

    def encrypt(self, nonce, data, associated_data) -> bytes:
        return self._lib.seal(self._key, nonce, data, associated_data)

    def decrypt(self, nonce, data, associated_data) -> bytes:
        return self._lib.open(self._key, nonce, data, associated_data)

    def open_sealed(self, payload: bytes, nonce_size: int = NONCE) -> bytes:
        """The plaintext of ``nonce || ciphertext || tag``, read in place."""
        return self._lib.open(self._key, payload[:nonce_size], payload, None, nonce_size)


_NAMES = ("libcrypto.so.3", "libcrypto.so.1.1")
_lib: Lib | None = None
_looked = False


def load() -> Lib | None:
    """The process's libcrypto, loaded once; None where there is none to use.

    Threads that ask at once may each load it (the same library, the same
    answer); none sees an answer before it is known."""
    global _lib, _looked
    if not _looked:
        found = None
        if "libcrypto" not in os.environ.get("OWSYNC_WITHOUT", "").split(","):
            for name in _NAMES:
                try:
                    found = Lib(ctypes.CDLL(name))
                    break
                except (OSError, AttributeError):  # absent, or too old (before 1.1.1)
                    continue
        _lib, _looked = found, True
    return _lib
