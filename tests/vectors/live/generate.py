"""Derive the live link's test vectors from the specification alone.

A second, independent implementation of docs/PROTOCOL.md, "The live link"
(Offer and keys, Rekey, Frames), on top of v2's transcript and frame layout:
it imports nothing from owsync.  HKDF is written out from RFC 5869 with the
standard library's HMAC; X25519 and AES-256-GCM are the `cryptography`
package's primitives.  Run it to rewrite link.json:

    .venv/bin/python tests/vectors/live/generate.py

tests/test_live_vectors.py checks that owsync reproduces every byte.
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
TYPES = {"AUTH": 1, "STATE": 2, "REQUEST": 4, "FILE": 6, "CHUNK": 7, "FILE_END": 8,
         "ERROR": 10, "INDEX_END": 12, "SKIP": 13, "ACK": 14, "PEERS": 15, "PING": 16,
         "REKEY": 17, "BYE": 18, "VRRP": 19}  # fmt: skip


def fixed(label: str, n: int = 32) -> bytes:
    return hashlib.sha256(b"owsync live test vector " + label.encode()).digest()[:n]


PSK = fixed("psk")
NONCE_I, NONCE_R = fixed("nonce i"), fixed("nonce r")
NODE_I, NODE_R = fixed("node i", 16).hex(), fixed("node r", 16).hex()
NODE_C = fixed("node c", 16).hex()  # a third daemon the initiator is linked to
SECRET_I, SECRET_R = fixed("x25519 i"), fixed("x25519 r")


def x25519_public(secret: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(secret).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


PUB_I, PUB_R = x25519_public(SECRET_I), x25519_public(SECRET_R)


def hello(hostname: str, timestamp: str, nonce: bytes, node: str, pub: bytes) -> bytes:
    """A daemon's v1 Hello: v1's fields, v2's nonce, the live offer (compact JSON)."""
    return (
        f'{{"type":"Hello","hostname":"{hostname}","timestamp":{timestamp},"version":1,'
        f'"v2":{{"nonce":"{nonce.hex()}","live":{{"node":"{node}","x25519":"{pub.hex()}"}}}}}}'
    ).encode()


HELLO_I = hello("router-a", "1795600000.0", NONCE_I, NODE_I, PUB_I)
HELLO_R = hello("router-b", "1795600001.0", NONCE_R, NODE_R, PUB_R)


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()  # RFC 5869: no salt = 0*32
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def rekeyed(key: bytes) -> bytes:
    return hkdf_sha256(key, b"", b"owsync live rekey", 32)


T = hashlib.sha256(
    struct.pack(">I", len(HELLO_I)) + HELLO_I + struct.pack(">I", len(HELLO_R)) + HELLO_R
).digest()


def x25519(secret: bytes, peer_public: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )


SHARED = x25519(SECRET_I, PUB_R)
if x25519(SECRET_R, PUB_I) != SHARED or not any(SHARED):
    raise SystemExit("X25519: the two sides disagree, or the shared secret is all zero")
OKM = hkdf_sha256(PSK + SHARED, NONCE_I + NONCE_R, b"owsync live keys" + T, 64)
K_I2R, K_R2I = OKM[:32], OKM[32:]
NEXT_I2R, NEXT_R2I = rekeyed(K_I2R), rekeyed(K_R2I)

# The files: (path, content, mtime ms); a tombstone has no content.
FIREWALL = ("firewall", b"config defaults\n\toption input 'ACCEPT'\n", 1795599990123)
DHCP = ("dhcp", b"config dnsmasq\n\toption domainneeded '1'\n\toption localise_queries '1'\n",
        1795599990456)  # fmt: skip
SYSTEM = ("system", b"config system\n\toption hostname 'router-b'\n", 1795599990789)
NETWORK_GONE = ("network", None, 1795599991000)  # deleted on the initiator
MODE = 420  # 0644
DHCP_CUT = 16  # the responder sends dhcp in two CHUNKs: 16 bytes, then the rest


def record(path: str, data: bytes | None, mtime: int) -> dict:
    """v2's record form: v1's fields in v1's order, numbers as JSON integers."""
    return {
        "path": path,
        "hash": None if data is None else hashlib.sha256(data).hexdigest(),
        "mtime": mtime,
        "size": 0 if data is None else len(data),
        "mode": MODE,
        "deleted": data is None,
    }


def body(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def file_header(path: str, data: bytes, mtime: int) -> bytes:
    return body({"path": path, "mode": MODE, "size": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), "mtime": mtime})  # fmt: skip


# Each direction's frames in sending order: (type, plaintext body).  REKEY is
# the last frame under the first key; what follows it is sealed under the
# next one, its counter back at 0.
# Each router's role in its VRRP instances (VRRP frames: the whole table,
# instance names in ascending order as owsync sends them).
VRRP_I = {"VI_LAN": {"role": "MASTER", "since": 1795599980}}
VRRP_R = {"VI_LAN": {"role": "BACKUP", "since": 1795599981},
          "VI_WAN": {"role": "FAULT", "since": 1795599982}}  # fmt: skip
BYE_I = "stopping"
BYE_R = "a link between these nodes exists already"
STREAMS = {
    "i2r": [
        ("AUTH", T),
        ("STATE", body([record(*FIREWALL), record(*NETWORK_GONE)])),
        ("INDEX_END", body({"id": 0, "reply": False})),
        ("PEERS", body({"nodes": sorted([NODE_R, NODE_C])})),
        ("VRRP", body({"instances": VRRP_I})),
        ("REQUEST", body(["dhcp", "system"])),
        ("FILE", file_header(*FIREWALL)),
        ("CHUNK", FIREWALL[1]),
        ("FILE_END", b""),
        ("ACK", body({"id": 0})),
        ("REKEY", b""),
        ("PING", b""),
        ("BYE", BYE_I.encode()),
    ],
    "r2i": [
        ("AUTH", T),
        ("STATE", body([record(*DHCP), record(*SYSTEM)])),
        ("INDEX_END", body({"id": 0, "reply": False})),
        ("PEERS", body({"nodes": [NODE_I]})),
        ("VRRP", body({"instances": VRRP_R})),
        ("REQUEST", body(["firewall"])),
        ("FILE", file_header(*DHCP)),
        ("CHUNK", DHCP[1][:DHCP_CUT]),
        ("CHUNK", DHCP[1][DHCP_CUT:]),
        ("FILE_END", b""),
        ("SKIP", body({"path": "system", "reason": "deleted meanwhile"})),
        ("ACK", body({"id": 0})),
        ("REKEY", b""),
        ("PING", b""),
        ("BYE", BYE_R.encode()),
    ],
}


def seal(key: bytes, counter: int, kind: str, plaintext: bytes) -> bytes:
    header = struct.pack(">IB", len(plaintext) + 16, TYPES[kind])
    nonce = b"\0\0\0\0" + struct.pack(">Q", counter)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def frames() -> list[dict]:
    out = []
    for direction, key in (("i2r", K_I2R), ("r2i", K_R2I)):
        counter, epoch = 0, 0
        for kind, plaintext in STREAMS[direction]:
            out.append({
                "dir": direction, "key_epoch": epoch, "counter": counter, "type": kind,
                "plaintext": plaintext.hex(), "wire": seal(key, counter, kind, plaintext).hex(),
            })  # fmt: skip
            counter += 1
            if kind == "REKEY":
                key, counter, epoch = rekeyed(key), 0, epoch + 1
    return out


def main() -> None:
    vectors = {
        "about": "live link vectors; derived by generate.py from the specification alone",
        "psk": PSK.hex(),
        "nonce_i": NONCE_I.hex(),
        "nonce_r": NONCE_R.hex(),
        "node_i": NODE_I,
        "node_r": NODE_R,
        "node_c": NODE_C,
        "x25519_secret_i": SECRET_I.hex(),
        "x25519_secret_r": SECRET_R.hex(),
        "x25519_public_i": PUB_I.hex(),
        "x25519_public_r": PUB_R.hex(),
        "hello_i": HELLO_I.decode(),
        "hello_r": HELLO_R.decode(),
        "transcript": T.hex(),
        "shared": SHARED.hex(),
        "k_i2r": K_I2R.hex(),
        "k_r2i": K_R2I.hex(),
        "next_k_i2r": NEXT_I2R.hex(),
        "next_k_r2i": NEXT_R2I.hex(),
        "files": {
            p: {"content": None if d is None else d.hex(), "record": record(p, d, m)}
            for p, d, m in (FIREWALL, NETWORK_GONE, DHCP, SYSTEM)
        },
        "vrrp_i": VRRP_I,
        "vrrp_r": VRRP_R,
        "bye_i": BYE_I,
        "bye_r": BYE_R,
        "frames": frames(),
    }
    with open(os.path.join(HERE, "link.json"), "w") as f:
        json.dump(vectors, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
