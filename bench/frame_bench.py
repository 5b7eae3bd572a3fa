"""What sealing and opening one v2 frame costs, per AES-GCM binding.

    python bench/frame_bench.py [--size 2048] [--frames 20000] [--rounds 7]

Microseconds per frame (the minimum over --rounds of --frames frames, so that
the machine's other load shows as little as it can), for a frame body of
--size bytes sealed with its 5-byte header as associated data, as
protocol2's FrameWriter and FrameReader do:

- ``frames``: protocol2.FrameWriter.frame and FrameReader.feed as they are
  (whatever crypto.frame_cipher picks: libcrypto's FrameCipher if loadable),
  a reader fed 100 frames per call;
- ``ossl one-shot``: ossl.AESGCM.encrypt / decrypt (a context, its key
  schedule and declared ctypes calls per frame: what the framing called
  before FrameCipher; decrypt given a memoryview, as FrameReader passed it);
- ``ossl FrameCipher``: one context per direction, the nonce reset per frame;
- ``cryptography``: cryptography's AESGCM (its compiled binding).
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from owsync.core import ossl  # noqa: E402
from owsync.core import protocol2 as p2  # noqa: E402


def per_frame(fn, frames: int, rounds: int) -> float:
    return min(timeit.repeat(fn, number=frames, repeat=rounds)) / frames * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    key, body = os.urandom(32), os.urandom(args.size)
    nonce, header = p2.frame_nonce(1), p2._HEADER.pack(args.size + p2.TAG, p2.CHUNK)
    rows: list[tuple[str, float, float]] = []

    w, r = p2.FrameWriter(key), p2.FrameReader(key)
    frame = w.frame(p2.CHUNK, body)
    assert r.feed(frame)[0].body == body
    # the reader is fed 100 frames at a time, as a read of the socket brings
    # them (a new reader for each read, the same 100 frames: its making is
    # in the figure, a hundredth of it per frame)
    w100 = p2.FrameWriter(key)
    read = b"".join(w100.frame(p2.CHUNK, body) for _ in range(100))
    seal = per_frame(lambda: w.frame(p2.CHUNK, body), args.frames, args.rounds)
    opened = per_frame(lambda: p2.FrameReader(key).feed(read), args.frames // 100, args.rounds)
    opened /= 100
    rows.append(("frames (FrameWriter / FrameReader)", seal, opened))

    lib = ossl.load()
    if lib is not None:
        aead = ossl.AESGCM(lib, key)
        sealed = aead.encrypt(nonce, body, header)
        view = memoryview(header + sealed)[len(header) :]
        rows.append((
            "ossl one-shot (AESGCM, before)",
            per_frame(lambda: aead.encrypt(nonce, body, header), args.frames, args.rounds),
            per_frame(lambda: aead.decrypt(nonce, view, header), args.frames, args.rounds),
        ))  # fmt: skip
        enc, dec = ossl.FrameCipher(lib, key, True), ossl.FrameCipher(lib, key, False)
        whole = enc.seal_frame(nonce, header, body)
        n = len(whole) - len(header)
        assert dec.open_frame(nonce, whole, 0, len(header), n) == body
        rows.append((
            "ossl FrameCipher",
            per_frame(lambda: enc.seal_frame(nonce, header, body), args.frames, args.rounds),
            per_frame(lambda: dec.open_frame(nonce, whole, 0, 5, n), args.frames, args.rounds),
        ))  # fmt: skip
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        pass
    else:
        ref = AESGCM(key)
        sealed = ref.encrypt(nonce, body, header)
        rows.append((
            "cryptography AESGCM",
            per_frame(lambda: ref.encrypt(nonce, body, header), args.frames, args.rounds),
            per_frame(lambda: ref.decrypt(nonce, sealed, header), args.frames, args.rounds),
        ))  # fmt: skip
    print(f"{args.size}-byte frame body, us per frame (min of {args.rounds} x {args.frames}),"
          f" load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':36} {'seal':>7} {'open':>7}")
    for name, s, o in rows:
        print(f"{name:36} {s:7.2f} {o:7.2f}")


if __name__ == "__main__":
    main()
