"""Crash points: a receiving node killed at each file-system call of its write path.

Not at random moments (tests/test_crash.py does that) but at every call, one
at a time.  Node B holds old contents; A has since replaced some of them,
deleted others (tombstones for B) and created new ones, one in a new
directory, one of several chunks; B has a file of its own.  A session
between them makes B receive new files, replace files (keeping what they
replaced in its version store), apply A's deletions and save its database.

A first run of that session, traced (``OWSYNC_CRASH_TRACE``, see
owsync/io/faults.py), lists every crash point B hits: (name, n-th call).
Then, for each, from the same initial state, B is killed with SIGKILL just
before that call (``OWSYNC_CRASH_AT``) and:

- it did die of SIGKILL there;
- every file of B is its old content or A's new one, byte for byte (a temp
  file beside its target is never in place); B's database and its version
  store's index load, and every version the index names has its content;
- then, meanwhile, A re-creates two files it had deleted, A edits a new file,
  B edits a replaced file, writes a file A deleted (still there or not) and
  deletes one of its own;
- one session converges both trees to exactly those last writes: no deleted
  file comes back, no newer write is lost, no temp file is left; B's
  database records that state, and its store keeps every content that A's
  writes and deletions replaced on B.

CI kills B at the first and the last call of each point, with B as the
connecting side.  ``OWSYNC_CRASH_POINTS=all`` (the long setting) kills it
at every call, as the connecting side speaking v2 and v1 and as the
listening side.  ``OWSYNC_CRASH_POINT=NAME:N`` replays one.

The second test stops B (``OWSYNC_STOP_AT``) just before it puts a received
file in place, writes the file locally meanwhile, and lets B go on: the local
write is kept, never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Node, armed, owsync_cmd, traced

from owsync.core.state import loads_db_root

EVERY_CALL = os.environ.get("OWSYNC_CRASH_POINTS") == "all"
ONE = os.environ.get("OWSYNC_CRASH_POINT")
ROLES = ["connect", "connect-v1", "listen"] if EVERY_CALL else ["connect"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_temp(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".owsync-") and name.endswith(".tmp")


class Scenario:
    """Nodes A and B in ``work``, their initial state kept aside to start each run from."""

    STATE = ("a", "b", "a.db", "b.db", "a.versions", "b.versions")

    def __init__(self, work: Path, role: str) -> None:
        self.work = work
        self.role = role
        self.a = Node(work, "a")
        self.b = Node(work, "b", max_protocol=1 if role == "connect-v1" else None)
        rng = random.Random(7)
        old_t, new_t = time.time() - 3600, time.time() - 60
        before = {f"keep{i}": b"kept %d\n" % i for i in range(2)}
        before |= {f"old{i}": b"old content %d\n" % i * (i + 1) for i in range(3)}
        before |= {f"gone{i}": b"deleted on a %d\n" % i for i in range(4)}
        for path, data in before.items():
            self.a.write(path, data, old_t)
            self.b.write(path, data, old_t)
        self.a.listen()
        try:
            self.b.sync_ok(self.a)  # both databases and version stores know them
        finally:
            self.a.stop()
        self.a.log.write_text("")  # listen() waits for its "listening on"
        news = {f"old{i}": b"new content %d\n" % i * (3 - i) for i in range(3)}
        news |= {f"new{i}": b"new file %d\n" % i for i in range(3)}
        news["sub/new3"] = b"in a new directory\n"
        news["big"] = rng.randbytes(150_000)  # several v2 chunks
        for path, data in news.items():
            self.a.write(path, data, new_t)
        for i in range(4):
            (self.a.dir / f"gone{i}").unlink()
        # A's deletions are recorded, stamped now: a write made after the
        # crash is later, whatever moment of the session B dies at
        self.a.listen()
        try:
            Node(work, "scanner", include_all=False).sync_ok(self.a)  # syncs nothing
        finally:
            self.a.stop()
        self.a.log.write_text("")
        self.b.write("mine", b"written on b\n", new_t)
        # what B may hold at a crash: its old content, or A's new one
        self.allowed = {p: {sha(d)} for p, d in before.items()}
        for p, d in news.items():
            self.allowed.setdefault(p, set()).add(sha(d))
        self.allowed["mine"] = {sha(b"written on b\n")}
        self.news = {p: sha(d) for p, d in news.items()}
        self.stays = {p for p in before if not p.startswith("gone")} | {"mine"}
        self.replaced = {before[f"old{i}"] for i in range(3)} | {
            before[f"gone{i}"] for i in range(4)
        }
        # what both hold after a session: the last write of each path
        self.synced = {p: d for p, d in before.items() if not p.startswith("gone")}
        self.synced |= news | {"mine": b"written on b\n"}
        self.gone = {f"gone{i}" for i in range(4)}
        # and after the writes made while B was down
        self.final = self.synced | {
            "gone0": b"re-created on a after the crash\n",
            "gone1": b"also re-created on a\n",
            "gone3": b"re-created on b after the crash\n",
            "new0": b"edited on a after the crash\n",
            "old1": b"edited on b after the crash\n",
        }
        del self.final["keep1"]
        self.deleted = {"gone2", "keep1"}
        self.saved = work / "initial"
        self.saved.mkdir()
        for name in self.STATE:
            src = work / name
            if src.is_dir():
                shutil.copytree(src, self.saved / name)
            elif src.exists():
                shutil.copy2(src, self.saved / name)

    def reset(self) -> None:
        """Back to the initial state, at the same paths (a database names its directory)."""
        for name in self.STATE:
            cur, saved = self.work / name, self.saved / name
            if cur.is_dir():
                shutil.rmtree(cur)
            elif cur.exists():
                cur.unlink()
            if saved.is_dir():
                shutil.copytree(saved, cur)
            elif saved.exists():
                shutil.copy2(saved, cur)

    # --- the session, B in its role ---------------------------------------------

    def start(self) -> None:
        if self.role != "listen":
            self.a.listen()

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()

    def session(self, env: dict[str, str]) -> tuple[int | None, bool]:
        """B's session with A, B's process armed with ``env``: (B's exit status,
        a negative signal number, or None for a listener still serving; whether
        the session completed)."""
        if self.role == "listen":
            self.b.env = env
            self.b.log.write_text("")  # listen() waits for its "listening on"
            self.b.listen()
            ok = self.a.connect(self.b).returncode == 0
            if "OWSYNC_CRASH_AT" in env:  # killed, it is gone (its socket closed first)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.b.proc.wait(10)
            status = self.b.proc.poll()
            self.b.stop()
            return status, ok
        with open(self.work / "b-session.log", "w") as log:
            p = subprocess.run(
                owsync_cmd("connect", f"127.0.0.1:{self.a.port}", *self.b.opts()),
                env={**self.b.environ(), **env}, stdout=log, stderr=log, timeout=120,
            )  # fmt: skip
        return p.returncode, p.returncode == 0

    # --- checks ---------------------------------------------------------------

    def check_crashed(self) -> str:
        """B as the kill left it; returns how far its session had gone."""
        b = self.b.files()
        missing = sorted(self.stays - b.keys())
        assert not missing, f"files B never deletes are gone: {missing}"
        for p, data in b.items():
            if is_temp(p):
                continue  # beside its target, never in place
            assert p in self.allowed, f"unexpected file {p}"
            assert sha(data) in self.allowed[p], f"{p} is neither old nor new (half-written?)"
        loads(self.b.db)
        store_consistent(self.work / "b.versions")
        placed = sum(1 for p, h in self.news.items() if p in b and sha(b[p]) == h)
        deleted = sum(1 for i in range(4) if f"gone{i}" not in b)
        temps = sum(1 for p in b if is_temp(p))
        return (f"{placed}/{len(self.news)} received in place, {deleted}/4 deleted,"
                f" {temps} temp file(s)")  # fmt: skip

    def meanwhile(self) -> None:
        """Writes made after the crash, before B is back: each must win."""
        # of two, one at least was among B's first three deletions
        self.a.write("gone0", self.final["gone0"])
        self.a.write("gone1", self.final["gone1"])
        self.a.write("new0", self.final["new0"])
        self.b.write("old1", self.final["old1"])
        self.b.write("gone3", self.final["gone3"])  # still there, or deleted already
        (self.b.dir / "keep1").unlink()

    def check_converged(self, want: dict[str, bytes], deleted: set[str]) -> None:
        a, b = self.a.files(), self.b.files()
        temps = [p for p in [*a, *b] if is_temp(p)]
        assert not temps, f"temp files left: {temps}"
        back = sorted(p for p in deleted if p in a or p in b)
        assert not back, f"deleted files came back: {back}"
        lost = sorted(p for p, d in want.items() if a.get(p) != d or b.get(p) != d)
        assert not lost, f"not the last write on both nodes: {lost}"
        assert a == b == want
        records = loads(self.b.db)
        for p, d in want.items():
            r = records[p]
            assert not r.deleted and r.hash == sha(d), f"B's database: {p} is {r}"
        for p in deleted:
            assert records[p].deleted, f"B's database: {p} is {records[p]}"
        kept = {v["hash"] for v in store_consistent(self.work / "b.versions")}
        missing = [d for d in self.replaced if sha(d) not in kept]
        assert not missing, f"B's version store lost {len(missing)} replaced content(s)"


def loads(db: Path) -> dict:
    """B's database: absent, or it loads (it is replaced atomically)."""
    if not db.exists():
        return {}
    records, _ = loads_db_root(db.read_bytes())
    return records


def store_consistent(root: Path) -> list[dict]:
    """The versions a store's index names, each with its content on disk."""
    index = root / "index.json"
    if not index.exists():
        return []
    versions = json.loads(index.read_bytes())["versions"]
    for v in versions:
        obj = root / "objects" / v["hash"][:2] / v["hash"]
        assert obj.is_file(), f"version {v['id']} of {v['path']}: its content is gone"
        assert sha(obj.read_bytes()) == v["hash"], f"version {v['id']}: a torn content"
    return versions


def cases(hits: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The calls to crash at: all of them in the long setting; else the first
    and the last call of each point."""
    if ONE:
        name, _, n = ONE.rpartition(":")
        return [(name, int(n))]
    if EVERY_CALL:
        return hits
    last: dict[str, int] = {}
    for name, n in hits:
        last[name] = n
    return [(name, n) for name, n in hits if n in (1, last[name])]


@pytest.mark.parametrize("role", ROLES)
def test_a_kill_at_every_crash_point_loses_nothing(tmp_path, role):
    s = Scenario(tmp_path, role)
    s.start()
    try:
        trace = tmp_path / "trace"
        _, ok = s.session(armed(trace=trace))
        assert ok, "the traced session failed"
        s.check_converged(s.synced, s.gone)
        hits = traced(trace)
        assert hits, "no crash point was hit"
        todo = cases(hits)
        rows, failures = [], []
        t0 = time.monotonic()
        for name, n in todo:
            s.reset()
            status, _ = s.session(armed(crash_at=(name, n)))
            row = f"{name}:{n}"
            try:
                assert status == -signal.SIGKILL, f"not killed there (exit status {status})"
                state = s.check_crashed()
                s.meanwhile()
                _, ok = s.session({})
                assert ok, "the next session failed"
                s.check_converged(s.final, s.deleted)
                rows.append(f"{row:40} ok    {state}")
            except AssertionError as exc:
                first = str(exc).splitlines()[0]
                rows.append(f"{row:40} FAIL  {first}")
                failures.append(f"{row}: {first}")
        took = time.monotonic() - t0
        print(f"\n{role}: {len({h for h, _ in hits})} crash points, {len(hits)} calls; "
              f"killed at {len(todo)} in {took:.1f} s", *rows, sep="\n  ")  # fmt: skip
        assert not failures, "\n".join(failures)
    finally:
        s.stop()


def synced_pair(root: Path, path: str) -> tuple[Node, Node]:
    """A and B in sync on ``firewall``; then A writes ``path`` (newer)."""
    a, b = Node(root, "a"), Node(root, "b")
    for n in (a, b):
        n.write("firewall", b"config zone lan\n", time.time() - 3600)
    a.listen()
    b.sync_ok(a)
    a.write(path, b"written on a\n", time.time() - 60)
    return a, b


def wait_stopped(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until our child ``proc`` has stopped itself (SIGSTOP); fails if it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"ended (status {proc.returncode}) before the point"
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError("never stopped at the point")


@pytest.mark.parametrize("how", ["replaced by a rename", "rewritten in place", "created"])
def test_a_local_write_racing_the_rename_of_a_received_file_is_kept(tmp_path, how):
    """B is stopped at the crash point just before a received file goes in
    place; meanwhile the file is written on B (as an editor or ``uci commit``
    does: a new file renamed over it; or rewritten in place; or created where
    B had none).  B goes on: the local write is kept, and the next session
    takes it to A, where it is the newest."""
    path = "dhcp" if how == "created" else "firewall"
    a, b = synced_pair(tmp_path / "probe", path)
    trace = tmp_path / "trace"
    try:
        b.env = armed(trace=trace)
        b.sync_ok(a)
    finally:
        a.stop()
    (point,) = [hit for hit in traced(trace) if hit[0].startswith("syncdir.rename")]

    a, b = synced_pair(tmp_path / "race", path)
    local = b"written on b while its session put a's in place\n"
    target = b.dir / path
    try:
        proc = subprocess.Popen(
            owsync_cmd("connect", f"127.0.0.1:{a.port}", *b.opts()),
            env={**b.environ(), **armed(stop_at=point)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_stopped(proc)
            if how == "rewritten in place":
                with open(target, "r+b") as f:
                    f.truncate(0)
                    f.write(local)
            else:
                staged = b.dir / f".{path}.edit"  # hidden: never synced
                staged.write_bytes(local)
                staged.rename(target)
        finally:
            proc.send_signal(signal.SIGCONT)  # our own child, by its PID
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert target.read_bytes() == local, f"the local write was lost: {point[0]}"
        assert not [p for p in b.files() if is_temp(p)]
        b.sync_ok(a)
        assert (a.dir / path).read_bytes() == local
        assert a.files() == b.files()
    finally:
        a.stop()
