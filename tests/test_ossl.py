"""owsync.core.ossl (AES-256-GCM and X25519 from libcrypto through ctypes)
against the cryptography package, byte for byte, and against RFC vectors."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from owsync.core import crypto, ossl

LIB = ossl.load()
pytestmark = pytest.mark.skipif(LIB is None, reason="no libcrypto 1.1.1 or 3 to load here")


def forms(b: bytes):
    return [b, bytearray(b), memoryview(b), memoryview(bytearray(b))]


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4095, 1 << 20])
def test_aes_gcm_same_as_cryptography(size):
    key, nonce, data, aad = os.urandom(32), os.urandom(12), os.urandom(size), os.urandom(13)
    ref = AESGCM(key).encrypt(nonce, data, aad)
    ours = ossl.AESGCM(LIB, key)
    for form in forms(data):
        assert ours.encrypt(nonce, form, aad) == ref
    for form in forms(ref):
        assert ours.decrypt(nonce, form, aad) == data
    assert ours.open_sealed(nonce + AESGCM(key).encrypt(nonce, data, None)) == data
    sealer = ossl.Sealer(LIB, key, nonce)
    pieces = [data[: size // 3], data[size // 3 :]]
    assert b"".join(sealer.update(p) for p in pieces) + sealer.finish() == (
        AESGCM(key).encrypt(nonce, data, None)
    )


def test_aes_gcm_refuses_what_does_not_authenticate():
    key, nonce = os.urandom(32), os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, b"payload", b"header")
    ours = ossl.AESGCM(LIB, key)
    for bad in (
        sealed[:-1] + bytes([sealed[-1] ^ 1]),  # the tag
        bytes([sealed[0] ^ 1]) + sealed[1:],  # the ciphertext
        sealed[:10],  # shorter than a tag
    ):
        with pytest.raises(ossl.InvalidTag):
            ours.decrypt(nonce, bad, b"header")
    with pytest.raises(ossl.InvalidTag):
        ours.decrypt(nonce, sealed, b"other header")
    with pytest.raises(ossl.InvalidTag):
        ossl.AESGCM(LIB, os.urandom(32)).decrypt(nonce, sealed, b"header")


def test_x25519_rfc7748_and_cryptography():
    # RFC 7748 section 6.1
    a = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    b_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert LIB.x25519_public(a) == bytes.fromhex(
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    assert LIB.x25519_shared(a, b_pub) == bytes.fromhex(
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    )
    for _ in range(10):
        s, t = os.urandom(32), os.urandom(32)
        ref = X25519PrivateKey.from_private_bytes(s)
        assert LIB.x25519_public(s) == ref.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert LIB.x25519_shared(s, LIB.x25519_public(t)) == ref.exchange(
            X25519PublicKey.from_public_bytes(LIB.x25519_public(t))
        )
    with pytest.raises(ValueError):
        LIB.x25519_shared(a, bytes(32))  # of low order


def test_hkdf_rfc5869_and_cryptography():
    # RFC 5869 test case 1
    ikm, salt = bytes([0x0B] * 22), bytes(range(13))
    info = bytes(range(0xF0, 0xFA))
    assert crypto.hkdf_sha256(ikm, salt, info, 42).hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    for length in (1, 32, 64, 100):
        for s in (None, os.urandom(24)):
            key = os.urandom(32)
            ref = HKDF(algorithm=hashes.SHA256(), length=length, salt=s, info=b"i").derive(key)
            assert crypto.hkdf_sha256(key, s, b"i", length) == ref


def _frame_header(size: int) -> bytes:
    return (size + 16).to_bytes(4, "big") + b"\x07"


@pytest.mark.parametrize("direct", [True, False])
def test_frame_cipher_same_as_cryptography_frame_after_frame(direct):
    """One context per direction, its nonce reset per frame: every frame is
    cryptography's AESGCM of it, whatever came before (sizes across the
    context's own buffer and beyond, bodies of every buffer type, frames
    read in place at an offset or from a copy)."""
    key = os.urandom(32)
    ref = AESGCM(key)
    enc, dec = ossl.FrameCipher(LIB, key, True), ossl.FrameCipher(LIB, key, False)
    dec._direct = enc._direct = direct  # also the path where id() is not the address
    small = ossl._SMALL + 64  # the context's own buffer: whole frames to seal, bodies to open
    sizes = [0, 1, 2048, 15, small - 21, small - 20, small, small + 1, 70000, 3]
    for counter, size in enumerate(sizes):
        nonce = bytes(4) + counter.to_bytes(8, "big")
        body, header = os.urandom(size), _frame_header(size)
        want = header + ref.encrypt(nonce, body, header)
        for form in forms(body):
            assert enc.seal_frame(nonce, header, form) == want
        stream = os.urandom(counter) + want + os.urandom(3)  # the frame at an offset
        for src in (stream, bytearray(stream), memoryview(stream)):
            assert dec.open_frame(nonce, src, counter, 5, size + 16) == body


def test_frame_cipher_refuses_and_goes_on():
    """A frame that does not authenticate (tag, body, header, nonce, key) is
    InvalidTag and leaves no OpenSSL error behind; the next good frame opens."""
    key = os.urandom(32)
    nonce, body = bytes(12), b"a frame body"
    header = _frame_header(len(body))
    good = header + AESGCM(key).encrypt(nonce, body, header)
    dec = ossl.FrameCipher(LIB, key, False)
    n = len(good) - 5
    for bad, bad_nonce in (
        (good[:-1] + bytes([good[-1] ^ 1]), nonce),  # the tag
        (good[:5] + bytes([good[5] ^ 1]) + good[6:], nonce),  # the ciphertext
        (bytes([good[0] ^ 1]) + good[1:], nonce),  # the header
        (good, bytes(11) + b"\x01"),  # another counter
        (header + AESGCM(os.urandom(32)).encrypt(nonce, body, header), nonce),  # another key
    ):
        with pytest.raises(ossl.InvalidTag):
            dec.open_frame(bad_nonce, bad, 0, 5, n)
        assert dec.open_frame(nonce, good, 0, 5, n) == body
    with pytest.raises(ossl.InvalidTag):
        dec.open_frame(nonce, good[:20], 0, 5, 15)  # shorter than a tag
    assert _error_queue_empty()


def _error_queue_empty() -> bool:
    """Whether this thread's OpenSSL error queue is empty (hashlib and
    cryptography would find what is left there)."""
    import ctypes

    for name in ossl._NAMES:
        try:
            dll = ctypes.CDLL(name)
        except OSError:
            continue
        dll.ERR_peek_error.restype = ctypes.c_ulong
        return dll.ERR_peek_error() == 0
    raise AssertionError("no libcrypto, though LIB loaded")


def test_frame_ciphers_one_per_thread():
    """Contexts are per object: two threads sealing and opening with objects
    of their own at the same time get every frame right."""
    import threading

    key = os.urandom(32)
    ref = AESGCM(key)
    failures: list[str] = []

    def work(seed: int) -> None:
        enc, dec = ossl.FrameCipher(LIB, key, True), ossl.FrameCipher(LIB, key, False)
        for counter in range(2000):
            nonce = seed.to_bytes(4, "big") + counter.to_bytes(8, "big")
            body = os.urandom(counter % 300)
            header = _frame_header(len(body))
            frame = enc.seal_frame(nonce, header, body)
            if frame != header + ref.encrypt(nonce, body, header):
                failures.append(f"thread {seed}: frame {counter} sealed wrong")
            if dec.open_frame(nonce, frame, 0, 5, len(frame) - 5) != body:
                failures.append(f"thread {seed}: frame {counter} opened wrong")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
