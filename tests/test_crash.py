"""Crash consistency: a receiving node killed with SIGKILL at a seeded random moment.

Each iteration, node B (the one connecting) holds old versions of some files and
files that A has deleted since (A's tombstones); A holds new contents, some
large enough that B spends time receiving, writing and renaming them. B's
`connect` process is killed at a random moment of its session: while receiving,
renaming a batch, applying deletions or saving its database. Then:

- no half-written file is ever in place: every file in B's directory is B's old
  version or A's new one, byte for byte;
- B's database is absent or loads (it is replaced atomically);
- after a new session, B equals A, no temp file is left, and no file A deleted
  comes back.

OWSYNC_CRASH_ITERATIONS sets the number of iterations (CI: 12; the long setting
runs 200).  A failing iteration names its seed; OWSYNC_CRASH_SEED replays one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time

import pytest
from conftest import Node, base_env, owsync_cmd

ITERATIONS = int(os.environ.get("OWSYNC_CRASH_ITERATIONS", "12"))
SEEDS = (
    [int(os.environ["OWSYNC_CRASH_SEED"])]
    if os.environ.get("OWSYNC_CRASH_SEED")
    else list(range(ITERATIONS))
)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_during_a_session_loses_nothing_and_the_next_one_converges(tmp_path, seed):
    rng = random.Random(seed)
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    allowed: dict[str, set[str]] = {}  # path -> contents B may hold after the crash
    deleted: list[str] = []
    now = time.time()
    for i in range(rng.randint(100, 250)):
        path = f"d{i % 5}/f{i}"
        old = os.urandom(rng.choice([10, 2000, 300_000, 1_000_000]))
        new = os.urandom(rng.choice([10, 2000, 300_000, 1_000_000]))
        kind = rng.choice(["new", "update", "same", "deleted-on-a"])
        if kind in ("update", "same", "deleted-on-a"):
            b.write(path, old, mtime=now - 3600)
            allowed[path] = {digest(old)}
        if kind == "update":
            a.write(path, new, mtime=now - 60)
        elif kind == "same":
            a.write(path, old, mtime=now - 3600)
        elif kind == "new":
            a.write(path, new, mtime=now - 60)
        if kind in ("new", "update"):
            allowed.setdefault(path, set()).add(digest(new))
        if kind == "deleted-on-a":  # A had it, then deleted it: a tombstone to send
            a.write(path, old, mtime=now - 3600)
            deleted.append(path)
    a.listen()
    try:
        # a first session records A's files in A's database; the deletions after it
        # are tombstones that A advertises to B
        t0 = time.monotonic()
        seeded = Node(tmp_path, "seed").connect(a)
        assert seeded.returncode == 0, seeded.stderr
        took = time.monotonic() - t0  # about as long as B's session will take
        for p in deleted:
            (a.dir / p).unlink()

        proc = subprocess.Popen(
            owsync_cmd("connect", f"127.0.0.1:{a.port}", *b.opts()),
            env=base_env(b.key), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(rng.uniform(0.05, 0.6 * took))  # a random moment of B's session
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)  # our own child, by its PID
        proc.wait(30)
        proc.stderr.close()

        ctx = f"seed {seed} ({'killed' if killed else 'finished first'})"
        print(ctx, flush=True)
        for p, data in b.files().items():
            if p.startswith(".owsync-") or "/.owsync-" in p or p == "b.db":
                continue  # a temp file beside its target is never in place
            assert p in allowed, f"{ctx}: unexpected {p}"
            assert digest(data) in allowed[p], f"{ctx}: {p} is half-written or foreign"
        if b.db.exists():
            json.loads(b.db.read_text())  # never a torn database

        r = b.connect(a)
        assert r.returncode == 0, f"{ctx}: {r.stderr}"
        assert b.files() == a.files(), ctx
        assert not [p for p in b.dir.rglob(".owsync-*")], f"{ctx}: a temp file was left"
        for p in deleted:
            assert not (b.dir / p).exists(), f"{ctx}: deleted {p} came back"
    finally:
        a.stop()
