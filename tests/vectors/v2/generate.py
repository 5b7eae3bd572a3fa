"""Derive the protocol v2 test vectors from the specification alone.

This is a second, independent implementation of docs/PROTOCOL.md's key
schedule and frame layout: it imports nothing from owsync.  HKDF is written
out from RFC 5869 with the standard library's HMAC; AES-256-GCM is the
`cryptography` package's primitive.  Run it to rewrite session.json:

    .venv/bin/python tests/vectors/v2/generate.py

tests/test_protocol2.py checks that owsync reproduces every byte.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {"AUTH": 1, "STATE": 2, "STATE_END": 3, "REQUEST": 4, "REQUEST_END": 5, "FILE": 6,
         "CHUNK": 7, "FILE_END": 8, "END": 9, "ERROR": 10, "DONE": 11}  # fmt: skip

PSK = hashlib.sha256(b"owsync v2 test vector psk").digest()
NONCE_I = hashlib.sha256(b"owsync v2 test vector nonce i").digest()
NONCE_R = hashlib.sha256(b"owsync v2 test vector nonce r").digest()
HELLO_I = (
    '{"type":"Hello","hostname":"router-a","timestamp":1795600000.0,"version":1,'
    '"v2":{"nonce":"' + NONCE_I.hex() + '"}}'
).encode()
HELLO_R = (
    '{"type":"Hello","hostname":"router-b","timestamp":1795600001.0,"version":1,'
    '"v2":{"nonce":"' + NONCE_R.hex() + '"}}'
).encode()
FILES = {  # the initiator holds firewall, the responder dhcp (paths, contents, mtime ms)
    "i": ("firewall", b"config defaults\n\toption input 'ACCEPT'\n", 1795599990123),
    "r": ("dhcp", b"config dnsmasq\n\toption domainneeded '1'\n", 1795599990456),
}


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def record_json(path: str, data: bytes, mtime: int) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return (f'{{"path":"{path}","hash":"{digest}","mtime":{mtime},"size":{len(data)},'
            f'"mode":420,"deleted":false}}')  # fmt: skip


def stream(me: str, peer: str) -> list[tuple[str, bytes]]:
    """One direction of the session: its frames' types and plaintext bodies."""
    path, data, mtime = FILES[me]
    want = FILES[peer][0]
    header = (f'{{"path":"{path}","mode":420,"size":{len(data)},'
              f'"sha256":"{hashlib.sha256(data).hexdigest()}","mtime":{mtime}}}')  # fmt: skip
    frames = [
        ("AUTH", T),
        ("STATE", f"[{record_json(path, data, mtime)}]".encode()),
        ("STATE_END", b""),
        ("REQUEST", f'["{want}"]'.encode()),
        ("REQUEST_END", b""),
        ("FILE", header.encode()),
        ("CHUNK", data),
        ("FILE_END", b""),
    ]
    frames.append(("END", f'{{"frames":8,"files":1,"bytes":{len(data)}}}'.encode()))
    frames.append(("DONE", b""))  # the peer's stream is in place and saved
    return frames


def seal(key: bytes | None, counter: int, kind: str, body: bytes) -> bytes:
    header = struct.pack(">IB", len(body) + (16 if key else 0), TYPES[kind])
    if key is None:
        return header + body
    nonce = b"\0\0\0\0" + struct.pack(">Q", counter)
    return header + AESGCM(key).encrypt(nonce, body, header)


T = hashlib.sha256(
    struct.pack(">I", len(HELLO_I)) + HELLO_I + struct.pack(">I", len(HELLO_R)) + HELLO_R
).digest()
OKM = hkdf_sha256(PSK, NONCE_I + NONCE_R, b"owsync v2 keys" + T, 64)
K_I2R, K_R2I = OKM[:32], OKM[32:]


def frames(encrypted: bool) -> list[dict]:
    out = []
    for direction, me, peer, key in (("i2r", "i", "r", K_I2R), ("r2i", "r", "i", K_R2I)):
        for counter, (kind, body) in enumerate(stream(me, peer)):
            out.append({
                "dir": direction, "counter": counter, "type": kind,
                "plaintext": body.hex(),
                "wire": seal(key if encrypted else None, counter, kind, body).hex(),
            })  # fmt: skip
    return out


def main() -> None:
    vectors = {
        "about": "protocol v2 vectors; derived by generate.py from the specification alone",
        "psk": PSK.hex(),
        "nonce_i": NONCE_I.hex(),
        "nonce_r": NONCE_R.hex(),
        "hello_i": HELLO_I.decode(),
        "hello_r": HELLO_R.decode(),
        "transcript": T.hex(),
        "k_i2r": K_I2R.hex(),
        "k_r2i": K_R2I.hex(),
        "files": {
            side: {"path": p, "content": d.hex(), "mtime": m, "mode": 420}
            for side, (p, d, m) in FILES.items()
        },
        "encrypted": frames(True),
        "plain": frames(False),
    }
    with open(os.path.join(HERE, "session.json"), "w") as f:
        json.dump(vectors, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
