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
