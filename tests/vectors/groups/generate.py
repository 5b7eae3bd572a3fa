"""Derive the sync-group test vectors from the specification alone.

A second, independent implementation of docs/PROTOCOL.md ("Sync groups",
with v2's and the live link's transcript, key schedule and frame layout):
it imports nothing from owsync.  HKDF is written out from RFC 5869 with the
standard library's HMAC; X25519 and AES-256-GCM are the `cryptography`
package's primitives.  Run it to rewrite groups.json:

    .venv/bin/python tests/vectors/groups/generate.py

tests/test_group_vectors.py checks that owsync reproduces every byte.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = os.path.dirname(os.path.abspath(__file__))
ERROR = 10  # the frame type of ERROR, in v2 and in the live link
GROUP = "dropbear"
REFUSAL = f"no such group {GROUP} on this node"  # "starts `no such group`"; owsync's text


def fixed(label: str, n: int = 32) -> bytes:
    return hashlib.sha256(b"owsync group test vector " + label.encode()).digest()[:n]


PSK = fixed("psk")
NONCE_I, NONCE_R = fixed("nonce i"), fixed("nonce r")
NODE_I, NODE_R = fixed("node i", 16).hex(), fixed("node r", 16).hex()
SECRET_I, SECRET_R = fixed("x25519 i"), fixed("x25519 r")


def x25519_public(secret: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(secret).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


PUB_I, PUB_R = x25519_public(SECRET_I), x25519_public(SECRET_R)


def v1_hello(hostname: str, timestamp: str, v2: str) -> bytes:
    """A v1 Hello in compact JSON, v1's members first, then ``"v2":`` and the advertisement."""
    return (
        f'{{"type":"Hello","hostname":"{hostname}","timestamp":{timestamp},"version":1,"v2":{v2}}}'
    ).encode()


def session_adv(nonce: bytes) -> str:
    """v2's advertisement naming GROUP: the nonce, then `group` after the others."""
    return f'{{"nonce":"{nonce.hex()}","group":"{GROUP}"}}'


def live_adv(nonce: bytes, node: str, pub: bytes, port: int) -> str:
    """A daemon's advertisement naming GROUP: nonce, live offer, then `group`."""
    return (
        f'{{"nonce":"{nonce.hex()}","live":{{"node":"{node}","port":{port},'
        f'"x25519":"{pub.hex()}"}},"group":"{GROUP}"}}'
    )


# a v2 session: the initiator names the group, the responder echoes it
HELLO_I = v1_hello("router-a", "1795600000.0", session_adv(NONCE_I))
HELLO_R = v1_hello("router-b", "1795600001.0", session_adv(NONCE_R))
# a live link between daemons: the same, with the live offers (and ports)
LIVE_I = v1_hello("router-a", "1795600000.0", live_adv(NONCE_I, NODE_I, PUB_I, 4321))
LIVE_R = v1_hello("router-b", "1795600001.0", live_adv(NONCE_R, NODE_R, PUB_R, 4321))


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def transcript(h_i: bytes, h_r: bytes) -> bytes:
    return hashlib.sha256(
        struct.pack(">I", len(h_i)) + h_i + struct.pack(">I", len(h_r)) + h_r
    ).digest()


def x25519(secret: bytes, peer_public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )


T = transcript(HELLO_I, HELLO_R)
OKM = hkdf_sha256(PSK, NONCE_I + NONCE_R, b"owsync v2 keys" + T, 64)
K_I2R, K_R2I = OKM[:32], OKM[32:]

LIVE_T = transcript(LIVE_I, LIVE_R)
SHARED = x25519(SECRET_I, PUB_R)
if x25519(SECRET_R, PUB_I) != SHARED or not any(SHARED):
    raise SystemExit("X25519: the two sides disagree, or the shared secret is all zero")
LIVE_OKM = hkdf_sha256(PSK + SHARED, NONCE_I + NONCE_R, b"owsync live keys" + LIVE_T, 64)
LIVE_K_I2R, LIVE_K_R2I = LIVE_OKM[:32], LIVE_OKM[32:]


def seal(key: bytes, counter: int, kind: int, plaintext: bytes) -> bytes:
    header = struct.pack(">IB", len(plaintext) + 16, kind)
    nonce = b"\0\0\0\0" + struct.pack(">Q", counter)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def main() -> None:
    vectors = {
        "about": "sync-group vectors; derived by generate.py from the specification alone",
        "psk": PSK.hex(),
        "group": GROUP,
        "nonce_i": NONCE_I.hex(),
        "nonce_r": NONCE_R.hex(),
        "hello_i": HELLO_I.decode(),
        "hello_r": HELLO_R.decode(),
        "transcript": T.hex(),
        "k_i2r": K_I2R.hex(),
        "k_r2i": K_R2I.hex(),
        "refusal": REFUSAL,
        # the responder's answer when it has no such group: its first frame, counter 0
        "error_r2i": seal(K_R2I, 0, ERROR, REFUSAL.encode()).hex(),
        "live": {
            "node_i": NODE_I,
            "node_r": NODE_R,
            "port": 4321,
            "x25519_secret_i": SECRET_I.hex(),
            "x25519_secret_r": SECRET_R.hex(),
            "hello_i": LIVE_I.decode(),
            "hello_r": LIVE_R.decode(),
            "transcript": LIVE_T.hex(),
            "shared": SHARED.hex(),
            "k_i2r": LIVE_K_I2R.hex(),
            "k_r2i": LIVE_K_R2I.hex(),
            "error_r2i": seal(LIVE_K_R2I, 0, ERROR, REFUSAL.encode()).hex(),
        },
        # group members a Hello may not carry (each a protocol error)
        "malformed": ["", "drop-bear", "x" * 65, 7, None, ["dropbear"], "dröpbear"],
    }
    with open(os.path.join(HERE, "groups.json"), "w") as f:
        json.dump(vectors, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
