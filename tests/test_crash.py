"""Crash consistency: a receiving node killed with SIGKILL at a seeded random moment.

Each iteration, node B holds old versions of some files and
files that A has deleted since (A's tombstones); A holds new contents, some
large enough that B spends time receiving, writing and renaming them. B is
killed with SIGKILL at a random moment of its session (while receiving,
renaming a batch, applying deletions or saving its database), in three roles:
B's `connect`; B's `listen`, A connecting; and B's daemon, which gets SIGHUP
with a changed configuration mid-session (a reload, which asks for a new
sync) and is killed a random moment after it. Then:

- no half-written file is ever in place: every file in B's directory is B's old
  version or A's new one, byte for byte;
- B's database is absent or loads (it is replaced atomically);
- after a new session, B equals A, no temp file is left, and no file A deleted
  comes back.

OWSYNC_CRASH_ITERATIONS sets the number of iterations of the first role, the
other two run half as many (CI: 12 + 6 + 6; the long setting: 200 + 100 +
100).  A failing iteration names its seed; OWSYNC_CRASH_SEED replays one.
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
from conftest import DaemonNode, Node, base_env, free_port, owsync_cmd, wait_for

ITERATIONS = int(os.environ.get("OWSYNC_CRASH_ITERATIONS", "12"))
SEEDS = (
    [int(os.environ["OWSYNC_CRASH_SEED"])]
    if os.environ.get("OWSYNC_CRASH_SEED")
    else list(range(ITERATIONS))
)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scenario(rng: random.Random, a: Node, b: Node):
    """Fill A and B; return (contents B may hold per path, paths A deletes)."""
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
    return allowed, deleted


def check_after_crash(ctx: str, b: Node, allowed: dict[str, set[str]], a: Node) -> None:
    """Check B as the crash left it; print how far its session had gone."""
    theirs = {p: digest(d) for p, d in a.files().items()}
    ours = b.files()
    done = sum(1 for p, d in ours.items() if theirs.get(p) == digest(d))
    print(f"{ctx}: {done} of {len(theirs)} of A's files in place at the kill", flush=True)
    for p, data in ours.items():
        if p.startswith(".owsync-") or "/.owsync-" in p:
            continue  # a temp file beside its target is never in place
        assert p in allowed, f"{ctx}: unexpected {p}"
        assert digest(data) in allowed[p], f"{ctx}: {p} is half-written or foreign"
    if b.db.exists():
        json.loads(b.db.read_text())  # never a torn database


def check_converged(ctx: str, a: Node, b: Node, deleted: list[str]) -> None:
    assert b.files() == a.files(), ctx
    assert not [p for p in b.dir.rglob(".owsync-*")], f"{ctx}: a temp file was left"
    for p in deleted:
        assert not (b.dir / p).exists(), f"{ctx}: deleted {p} came back"


def sync_and_check(ctx: str, a: Node, b: Node, deleted: list[str], connecting: Node) -> None:
    """The session after the crash, ``connecting`` connecting to the other
    (listening), succeeds and converges A and B."""
    r = connecting.connect(a if connecting is b else b)
    assert r.returncode == 0, f"{ctx}: {r.stderr}"
    check_converged(ctx, a, b, deleted)


def kill_at_random(rng, proc, took: float, after: float = 0.0) -> bool:
    time.sleep(after + rng.uniform(0.05, 0.6 * took))  # a random moment of B's session
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)  # our own child, by its PID
    proc.wait(30)
    return killed


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_during_a_session_loses_nothing_and_the_next_one_converges(tmp_path, seed):
    """B connects to A and receives; B's ``connect`` is killed."""
    rng = random.Random(seed)
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    allowed, deleted = scenario(rng, a, b)
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
        killed = kill_at_random(rng, proc, took)
        proc.stderr.close()
        ctx = f"seed {seed} ({'killed' if killed else 'finished first'})"
        check_after_crash(ctx, b, allowed, a)

        sync_and_check(ctx, a, b, deleted, connecting=b)
    finally:
        a.stop()


@pytest.mark.parametrize("seed", SEEDS[: max(1, len(SEEDS) // 2)])
def test_sigkill_of_the_listening_side_loses_nothing(tmp_path, seed):
    """A connects to B and sends; B's ``listen`` is killed mid-session."""
    rng = random.Random(seed)
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    allowed, deleted = scenario(rng, a, b)
    sink = Node(tmp_path, "sink").listen()
    try:
        t0 = time.monotonic()
        assert a.connect(sink).returncode == 0  # A's database, for its tombstones
        took = time.monotonic() - t0
    finally:
        sink.stop()
    for p in deleted:
        (a.dir / p).unlink()
    b.listen()
    try:
        proc = subprocess.Popen(
            owsync_cmd("connect", f"127.0.0.1:{b.port}", *a.opts()),
            env=base_env(a.key), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.05, 0.6 * took))
        killed = b.proc.poll() is None
        if killed:
            b.proc.send_signal(signal.SIGKILL)  # the listener the test started
        b.proc.wait(30)
        proc.wait(90)  # A's connect ends: its peer is gone
        ctx = f"listener, seed {seed} ({'killed' if killed else 'finished first'})"
    finally:
        b.stop()
    check_after_crash(ctx, b, allowed, a)
    b.log.write_text("")  # listen() waits for its "listening on"
    b.listen()
    try:
        sync_and_check(ctx, a, b, deleted, connecting=a)
    finally:
        b.stop()


@pytest.mark.parametrize("seed", SEEDS[: max(1, len(SEEDS) // 2)])
def test_sigkill_of_a_daemon_during_a_sighup_reload_loses_nothing(tmp_path, seed):
    """B is a daemon syncing from A at start; mid-session its configuration
    changes and it gets SIGHUP (a reload, which also asks for a new sync), and
    it is killed a random moment later.  Restarted, it converges."""
    rng = random.Random(seed)
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    allowed, deleted = scenario(rng, a, b)
    a.listen()
    d = DaemonNode(tmp_path, "b")  # the same directory and database as b
    try:
        t0 = time.monotonic()
        assert Node(tmp_path, "seed").connect(a).returncode == 0
        took = time.monotonic() - t0
        for p in deleted:
            (a.dir / p).unlink()
        spare = f"127.0.0.1:{free_port()}"  # a peer that is not there
        d.configure([f"127.0.0.1:{a.port}"], poll=3600).start()  # its session starts
        time.sleep(rng.uniform(0.0, 0.6 * took))
        d.configure([f"127.0.0.1:{a.port}", spare], poll=3600)
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGHUP)
        killed = kill_at_random(rng, d.proc, 0.5 * took)
        ctx = f"daemon, seed {seed} ({'killed' if killed else 'ended first'})"
        d.stop()
        check_after_crash(ctx, b, allowed, a)

        d.start()  # the database it left must load
        want = a.files()

        def converged() -> bool:
            try:
                return b.files() == want
            except FileNotFoundError:  # a temp file it removes as the test reads
                return False

        ok = wait_for(converged, timeout=60)
        assert ok, f"{ctx}: not converged: {d.text()[-2000:]}"
        check_converged(ctx, a, b, deleted)
    finally:
        d.stop()
        a.stop()
