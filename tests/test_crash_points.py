"""Crash points: a receiving node killed at each file-system call of its write path.

Not at random moments (tests/test_crash.py does that) but at every call, one
at a time.  Node B holds old contents; A has since replaced some of them,
deleted others (tombstones for B) and created new ones, one in a new
directory, one of several chunks; B has a file of its own.  A session
between them makes B receive new files, replace files (keeping what they
replaced in its version store), apply A's deletions and save its database.

A first run of that session, traced (``OWSYNC_CRASH_TRACE``, see
owsync/io/faults.py), lists every crash point B hits: (name, n-th call);
they must be exactly the points conftest.CRASH_POINTS says a session
reaches, so that a point added or gone fails here until the list says so.
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

The runs after a crash are traced too: the points only they reach (stale
temp files removed, a version's content no index names) must be those
CRASH_POINTS gives the recovery, and each is killed in turn as well (the run
after a crash killed there, then one more session converges).

CI kills B at the first call of each point and at the last of the points of
the sync directory and the database (the last file; the database saved with
the files in place), with B as the connecting side, then as on a system
without syncfs(2) and renameat2(2) (``OWSYNC_WITHOUT``) at the points only
reached there.  ``OWSYNC_CRASH_POINTS=all`` (the long setting) kills it at
every call, as the connecting side speaking v2 and v1 and as the listening
side.  ``OWSYNC_CRASH_POINT=NAME:N`` replays one.

The same session under strace (where strace is installed) shows that every
call changing B's directory, database or version store comes just after the
crash point of its kind: a call added without its point fails there.

Then a local write racing a received file's rename or a peer's deletion (B
stopped at that point, ``OWSYNC_STOP_AT``) is kept, never overwritten, and
still is when B is killed before it puts the write back (the next run puts
it back: the temp name says what it holds); and a corrupt database set
aside is killed at each of its calls.

And with two sync groups (issue 17): daemon B, with main and a second group,
connects to daemon A and takes the second group's changes over its live
link; killed at each point of that run (as tests/test_live_crash.py does for
main alone), the group it was writing holds old or new contents byte for
byte, both groups' databases and version stores load, and B started again
converges both groups to the writes made meanwhile on both nodes.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    CrashRun,
    DaemonCrashPair,
    DaemonNode,
    Node,
    SavedState,
    allowed_contents,
    armed,
    check_kept,
    check_last_writes,
    check_old_or_new,
    check_records,
    crash_cases,
    expected_points,
    files_under,
    group_conf,
    group_db,
    group_versions,
    is_temp,
    kill_each,
    load_db,
    node_files,
    owsync_cmd,
    put,
    records_hold,
    sha,
    store_versions,
    strace_cmd,
    traced,
    unpointed_calls,
    wait_for,
)

from owsync.core.state import loads_db_root

EVERY_CALL = os.environ.get("OWSYNC_CRASH_POINTS") == "all"
ONE = os.environ.get("OWSYNC_CRASH_POINT")
ROLES = ["connect", "fallback"] + (["connect-v1", "listen"] if EVERY_CALL else [])
# B as on a system without syncfs(2) and renameat2(2) (owsync/io/faults.py)
WITHOUT = {"OWSYNC_WITHOUT": "syncfs,renameat2"}


class Scenario(CrashRun):
    """Nodes A and B in ``work``, their initial state kept aside to start each run from."""

    STATE = ("a", "b", "a.db", "b.db", "a.versions", "b.versions")

    def __init__(self, work: Path, role: str) -> None:
        self.work = work
        self.role = role
        self.a = Node(work, "a")
        self.b = Node(work, "b", max_protocol=1 if role == "connect-v1" else None)
        self.without = WITHOUT if role == "fallback" else {}
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
        self.allowed = allowed_contents(before, news, {"mine": b"written on b\n"})
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
        self.state = SavedState(work, self.STATE)

    def reset(self) -> None:
        """Back to the initial state, at the same paths (a database names its directory)."""
        self.state.restore()

    # --- the session, B in its role ---------------------------------------------

    def start(self) -> None:
        if self.role != "listen":
            self.a.listen()

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()

    def session(self, env: dict[str, str], prefix=()) -> tuple[int | None, bool]:
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
                [*prefix, *owsync_cmd("connect", f"127.0.0.1:{self.a.port}", *self.b.opts())],
                env={**self.b.environ(), **env}, stdout=log, stderr=log, timeout=120,
            )  # fmt: skip
        return p.returncode, p.returncode == 0

    # --- what CrashRun asks ---------------------------------------------------

    def killed(self, name: str, n: int) -> int | None:
        self.reset()
        status, _ = self.session(armed(crash_at=(name, n)) | self.without)
        return status

    def restart(self, env: dict[str, str]) -> None:
        _, ok = self.session(env | self.without)
        assert ok, "the next session failed"

    def check_final(self) -> None:
        self.check_converged(self.final, self.deleted)

    # --- checks ---------------------------------------------------------------

    def check_crashed(self) -> str:
        """B as the kill left it; returns how far its session had gone."""
        b = self.b.files()
        missing = sorted(self.stays - b.keys())
        assert not missing, f"files B never deletes are gone: {missing}"
        check_old_or_new(b, self.allowed)
        loads(self.b.db)
        store_versions(self.work / "b.versions")
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
        check_last_writes(a, b, want, deleted)
        assert a == b == want
        check_records(loads(self.b.db), want, deleted)
        check_kept(self.work / "b.versions", self.replaced)


def loads(db: Path) -> dict:
    """B's database: absent, or it loads (it is replaced atomically)."""
    if not db.exists():
        return {}
    records, _ = loads_db_root(db.read_bytes())
    return records


# what each role's first, traced run must reach (conftest.CRASH_POINTS)
REACHES = {"connect": "session", "connect-v1": "session", "listen": "session",
           "fallback": "fallback"}  # fmt: skip


def kill_cases(role: str, hits: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The calls to kill B at: as crash_cases() says; without syncfs and
    renameat2, only at the points that only then are reached (the others
    are the same calls as with them)."""
    # the last file's calls; the database saved with the files in place
    todo = crash_cases(hits, last_of=("syncdir.", "database."))
    if role == "fallback" and not ONE:
        only = expected_points("fallback") - expected_points("session")
        todo = [(name, n) for name, n in todo if name in only]
    return todo


@pytest.mark.parametrize("role", ROLES)
def test_a_kill_at_every_crash_point_loses_nothing(crash_path, role):
    tmp_path = crash_path
    s = Scenario(tmp_path, role)
    s.start()
    try:
        trace = tmp_path / "trace"
        _, ok = s.session(armed(trace=trace) | s.without)
        assert ok, "the traced session failed"
        s.check_converged(s.synced, s.gone)
        hits = traced(trace)
        reached = {name for name, _ in hits}
        assert reached == expected_points(REACHES[role]), f"the points changed: {hits}"
        todo = kill_cases(role, hits)
        recovery: dict[str, tuple[str, int]] = {}  # a point only a recovery reaches -> after what
        again = tmp_path / "trace.again"

        def one(case: tuple[str, int]) -> str:
            again.unlink(missing_ok=True)
            row = s.kill_and_recover(*case, armed(trace=again))
            for point, _ in traced(again):
                if point not in reached:
                    recovery.setdefault(point, case)
            return row

        # the points only a run after a crash reaches: that run killed there in turn
        # (as on a system without syncfs and renameat2, the same calls: not again)
        def one_after(case: tuple[str, tuple[str, int]]) -> str:
            point, (name, n) = case
            s.reset()
            s.session(armed(crash_at=(name, n)) | s.without)
            s.meanwhile()
            status, _ = s.session(armed(crash_at=(point, 1)) | s.without)
            assert status == -signal.SIGKILL, f"not killed there (exit status {status})"
            loads(s.b.db)
            store_versions(tmp_path / "b.versions")
            s.restart({})
            s.check_final()
            return "ok"

        t0 = time.monotonic()
        rows, failures = kill_each(todo, one)
        again_at = sorted(recovery.items()) if role != "fallback" else []
        more_rows, more_failures = kill_each(
            again_at, one_after, label=lambda c: f"{c[1][0]}:{c[1][1]}, then {c[0]}:1"
        )
        rows += more_rows
        failures += more_failures
        took = time.monotonic() - t0
        print(f"\n{role}: {len(reached)} crash points, {len(hits)} calls; killed at"
              f" {len(todo)} + {len(again_at)} after a crash in {took:.1f} s",
              *rows, sep="\n  ")  # fmt: skip
        assert not failures, "\n".join(failures)
        if not ONE and role != "fallback":
            assert set(recovery) == expected_points("recovery"), "the recovery's points changed"
    finally:
        s.stop()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
@pytest.mark.parametrize("role", ["connect", "fallback"])
def test_every_call_of_the_write_path_goes_through_its_crash_point(crash_path, role):
    tmp_path = crash_path
    """B's session under strace: each call that changes its directory, its
    database or its version store comes just after the crash point of its
    kind, and the calls are exactly those of the points the run reached."""
    s = Scenario(tmp_path, role)
    s.start()
    try:
        trace, out = tmp_path / "trace", tmp_path / "strace" / "b"
        out.parent.mkdir()
        _, ok = s.session(armed(trace=trace) | s.without, prefix=strace_cmd(out))
        assert ok, "the traced session failed"
        s.check_converged(s.synced, s.gone)
        # without renameat2, its points come before no call (ENOSYS)
        silent = frozenset(["syncdir.rename.exchange", "syncdir.rename.noreplace"])
        bad = unpointed_calls(
            out, node_files(tmp_path, "b"), trace, silent if role == "fallback" else frozenset()
        )
        assert not bad, "calls without their crash point:\n" + "\n".join(bad[:20])
        assert {name for name, _ in traced(trace)} == expected_points(REACHES[role])
    finally:
        s.stop()


def synced_pair(root: Path, path: str, data: bytes) -> tuple[Node, Node]:
    """A, listening, and B in sync on ``path``, holding ``data`` written an hour ago."""
    a, b = Node(root, "a"), Node(root, "b")
    for n in (a, b):
        n.write(path, data, time.time() - 3600)
    a.listen()
    try:
        b.sync_ok(a)
    except BaseException:
        a.stop()
        raise
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


def write_while_stopped(a: Node, b: Node, env: dict[str, str], target: Path, how: str,
                        local: bytes) -> tuple[int, str]:  # fmt: skip
    """B's session with A, stopped at the point ``env`` arms (``OWSYNC_STOP_AT``),
    while ``target`` is written on B (as an editor or ``uci commit`` does: a new
    file renamed over it; or rewritten in place; or created), then let go:
    (B's exit status, its stderr)."""
    proc = subprocess.Popen(
        owsync_cmd("connect", f"127.0.0.1:{a.port}", *b.opts()),
        env={**b.environ(), **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_stopped(proc)
        if how == "rewritten in place":
            with open(target, "r+b") as f:
                f.truncate(0)
                f.write(local)
        else:
            staged = b.dir / f".{target.name}.edit"  # hidden: never synced
            staged.write_bytes(local)
            staged.rename(target)
    finally:
        proc.send_signal(signal.SIGCONT)  # our own child, by its PID
        _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def race(tmp_path: Path, how: str, env: dict[str, str]):
    """A and B synced, A with a newer write; B's session stopped just before
    it puts A's file in place (``env`` arms B further), the file written on B
    meanwhile (as an editor or ``uci commit`` does: a new file renamed over
    it; or rewritten in place; or created where B had none), then let go.
    Returns (B's exit status, A, B, the path, the local write)."""
    path = "dhcp" if how == "created" else "firewall"
    # the rename of a new file (none here), or of one replacing B's
    point = ("syncdir.rename.noreplace" if how == "created" else "syncdir.rename.exchange", 1)
    a, b = synced_pair(tmp_path / "race", "firewall", b"config zone lan\n")
    a.write(path, b"written on a\n", time.time() - 60)
    local = b"written on b while its session put a's in place\n"
    status, _ = write_while_stopped(a, b, armed(stop_at=point) | env, b.dir / path, how, local)
    return status, a, b, path, local


@pytest.mark.parametrize("how", ["replaced by a rename", "rewritten in place", "created"])
def test_a_local_write_racing_the_rename_of_a_received_file_is_kept(tmp_path, how):
    """B goes on after the local write: it is kept, and the next session
    takes it to A, where it is the newest.  B's run reaches the points of
    that race: the rename swapped back (renameat2 RENAME_EXCHANGE), the temp
    file removed."""
    trace = tmp_path / "trace"
    status, a, b, path, local = race(tmp_path, how, armed(trace=trace))
    try:
        assert status == 0
        assert (b.dir / path).read_bytes() == local, "the local write was lost"
        assert not [p for p in b.files() if is_temp(p)]
        want = {"syncdir.unlink.temp"} | ({"syncdir.rename.back"} if how != "created" else set())
        reached = {name for name, _ in traced(trace)} - expected_points("session")
        assert want <= reached <= expected_points("race"), reached
        b.sync_ok(a)
        assert (a.dir / path).read_bytes() == local
        assert a.files() == b.files()
    finally:
        a.stop()


@pytest.mark.parametrize("how", ["replaced by a rename", "rewritten in place"])
def test_a_local_write_racing_a_peers_deletion_is_kept(tmp_path, how):
    """B is stopped just after it checked a file A deleted and before it
    removes it; meanwhile the file is written on B.  B goes on: the local
    write is kept (put back where it was), and the next session takes it to
    A: a write after the deletion is a re-creation."""
    a, b = synced_pair(tmp_path, "dhcp", b"config dnsmasq\n")
    try:
        (a.dir / "dhcp").unlink()
        before = SavedState(tmp_path, ["b", "b.db", "b.versions"])
        trace = tmp_path / "trace"
        b.env = armed(trace=trace)
        b.sync_ok(a)
        # the first call after the check: the file taken aside (or, unlinked outright)
        (point,) = [h for h in traced(trace) if h[0].endswith(".deleted")][:1]
        before.restore()  # back to before that session
        local = b"written on b while its session removes it\n"
        target = b.dir / "dhcp"
        trace.unlink()
        b.env = {}
        status, err = write_while_stopped(a, b, armed(stop_at=point, trace=trace), target, how,
                                          local)  # fmt: skip
        assert status == 0, err
        assert target.exists() and target.read_bytes() == local, "the local write was lost"
        assert not [p for p in b.files() if is_temp(p)]
        reached = {name for name, _ in traced(trace)} - expected_points("session")
        assert reached <= expected_points("race") and "syncdir.rename.undeleted" in reached
        b.sync_ok(a)
        assert (a.dir / "dhcp").read_bytes() == local
        assert a.files() == b.files()
    finally:
        a.stop()


@pytest.mark.parametrize("how", ["replaced by a rename", "rewritten in place"])
def test_a_kill_between_the_exchange_and_the_swap_back_keeps_the_racing_local_write(tmp_path, how):
    """As above, and B is killed at the swap back (``syncdir.rename.back``),
    the local write under the temp name the exchange gave it: B's next
    session puts it back in place (its temp name says what it is) and takes
    it to A, where it is the newest."""
    env = armed(crash_at=("syncdir.rename.back", 1))
    status, a, b, path, local = race(tmp_path, how, env)
    try:
        assert status == -signal.SIGKILL
        assert [p for p in b.files() if is_temp(p)], "nothing left aside: not that window"
        trace = tmp_path / "trace"
        b.env = armed(trace=trace)
        b.sync_ok(a)
        assert (b.dir / path).read_bytes() == local, "the local write was lost"
        assert "syncdir.rename.recover" in {name for name, _ in traced(trace)}
        assert not [p for p in b.files() if is_temp(p)]
        assert (a.dir / path).read_bytes() == local
        assert a.files() == b.files()
    finally:
        a.stop()


@pytest.mark.parametrize("how", ["replaced by a rename", "rewritten in place"])
def test_a_kill_before_a_racing_local_write_is_put_back_from_a_deletion_keeps_it(tmp_path, how):
    """B is stopped just before it takes a file A deleted aside, the file is
    written on B meanwhile, and B is killed as it would put it back
    (``syncdir.rename.undeleted``), the local write under the temp name the
    deletion gave it: B's next session puts it back and takes it to A (a
    write after the deletion is a re-creation)."""
    a, b = synced_pair(tmp_path, "dhcp", b"config dnsmasq\n")
    try:
        (a.dir / "dhcp").unlink()
        local = b"written on b while its session removes it\n"
        target = b.dir / "dhcp"
        env = armed(stop_at=("syncdir.rename.deleted", 1),
                    crash_at=("syncdir.rename.undeleted", 1))  # fmt: skip
        status, _ = write_while_stopped(a, b, env, target, how, local)
        assert status == -signal.SIGKILL
        assert not target.exists() and [p for p in b.files() if is_temp(p)], "not that window"
        trace = tmp_path / "trace"
        b.env = armed(trace=trace)
        b.sync_ok(a)
        assert target.exists() and target.read_bytes() == local, "the local write was lost"
        assert "syncdir.rename.recover" in {name for name, _ in traced(trace)}
        assert not [p for p in b.files() if is_temp(p)]
        assert (a.dir / "dhcp").read_bytes() == local
        assert a.files() == b.files()
    finally:
        a.stop()


def test_a_kill_while_a_corrupt_database_is_set_aside_loses_nothing(tmp_path):
    """B's database is corrupt (and a journal lies beside it): its session
    sets both aside and rebuilds them from a scan.  Killed at each of those
    calls in turn, the next session still converges, with the database of
    the corrupt one kept as ``.corrupt``."""
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    a.write("firewall", b"config zone lan\n", time.time() - 60)
    b.write("dhcp", b"config dnsmasq\n", time.time() - 60)
    a.listen()
    try:
        points = sorted(expected_points("corrupt"))
        for point in points:
            b.db.write_bytes(b'{"files": {"dhcp": [')  # torn
            Path(str(b.db) + ".journal").write_bytes(b"junk\n")
            b.env = armed(crash_at=(point, 1))
            assert b.connect(a).returncode == -signal.SIGKILL, f"not killed at {point}"
        trace = tmp_path / "trace"
        b.env = armed(trace=trace)
        b.sync_ok(a)
        reached = {name for name, _ in traced(trace)}
        assert set(points) <= reached, reached
        assert a.files() == b.files() and len(b.files()) == 2
        assert set(loads(b.db)) == {"firewall", "dhcp"}
        assert Path(str(b.db) + ".corrupt").exists()
        assert not Path(str(b.db) + ".journal").exists()
    finally:
        a.stop()


# --- a second sync group ------------------------------------------------------------

KEYS = "keys"  # the second group: a dropbear-like directory of its own on each node
K_OLD = {f"key{i}": f"old key {i}\n".encode() for i in range(4)}
K_OLD |= {f"gone{i}": f"deleted on a {i}\n".encode() for i in range(2)}
K_NEW = {f"key{i}": f"new key {i}\n".encode() * (i + 1) for i in range(3)}
K_NEW |= {"sub/new": b"in a new directory\n", "new0": b"new on a\n"}
K_NEW["big"] = random.Random(17).randbytes(150_000)  # several chunks
MAIN_FILES = {"network": b"config interface 'lan'\n", "dhcp": b"config dnsmasq\n"}


class TwoGroups(DaemonCrashPair):
    """Daemons A and B, each with main and the group KEYS (``node.keys``).  B,
    started, connects (v2, its live link; A's attempts back off while B is down)
    and takes A's changes of KEYS, made while B was down (main unchanged
    meanwhile, so that every write of B's run is of KEYS).  Their state after
    the setup is kept aside."""

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        for d, peers in ((self.a, [self.b.addr]), (self.b, [self.a.addr])):
            d.keys = work / f"{d.name}-{KEYS}"
            d.keys.mkdir()
            d.configure(peers, extra=group_conf(KEYS, d.keys))
        old_t = time.time() - 3600
        for name, data in K_OLD.items():
            put(self.a.keys / name, data, old_t)
        for name, data in MAIN_FILES.items():
            put(self.a.dir / name, data, old_t)
        self.a.start()
        self.b.start()
        try:
            assert wait_for(lambda: self.recorded(self.b, MAIN_FILES, K_OLD), 30), self.b.text()
        finally:
            self.b.stop()
        for name, data in K_NEW.items():
            put(self.a.keys / name, data, time.time() - 60)
        for i in range(2):
            (self.a.keys / f"gone{i}").unlink()
        gone = {"gone0", "gone1"}
        try:
            assert wait_for(lambda: records_hold(self.kdb(self.a), K_NEW, gone), 20)
        finally:
            self.a.stop()
        put(self.b.keys / "mine", b"written on b\n", time.time() - 120)  # recorded at B's start
        self.allowed = allowed_contents(K_OLD, K_NEW, {"mine": b"written on b\n"})
        self.replaced = [
            K_OLD["key0"],
            K_OLD["key2"],
            K_OLD["gone1"],
        ]  # kept on B, whenever it died
        self.synced = {p: d for p, d in K_OLD.items() if p not in gone} | K_NEW
        self.synced["mine"] = b"written on b\n"
        self.gone = gone
        # after the writes made while B was down, in both groups
        self.plan_meanwhile(self.synced, edit="key1", remove="key3")
        self.main_final = MAIN_FILES | {"wireless": b"config wifi-device radio0\n",
                                        "dhcp": b"config dnsmasq 'edited on b'\n"}  # fmt: skip
        parts = ("", f"-{KEYS}", ".db", ".db.journal", ".versions",
                 f".{KEYS}.db", f".{KEYS}.db.journal", f".{KEYS}.versions")  # fmt: skip
        self.keep([n + x for n in "ab" for x in parts])

    @staticmethod
    def kdb(d: DaemonNode) -> Path:
        return group_db(d.db, KEYS)

    def recorded(self, d: DaemonNode, main: dict[str, bytes], keys: dict[str, bytes],
                 gone=frozenset()) -> bool:  # fmt: skip
        return records_hold(d.db, main) and records_hold(self.kdb(d), keys, gone)

    # --- what DaemonCrashPair asks -------------------------------------------

    def in_sync(self) -> bool:
        return self.converged(MAIN_FILES, self.synced)

    def not_always(self, name: str, n: int) -> bool:
        return n > 1 or name not in expected_points("live")

    def check_synced(self) -> None:
        self.check_converged(MAIN_FILES, self.synced, self.gone)

    def check_final(self) -> None:
        self.check_converged(self.main_final, self.final, self.deleted)

    # --- checks ---------------------------------------------------------------

    def converged(self, main: dict[str, bytes], keys: dict[str, bytes]) -> bool:
        a, b = self.a, self.b
        return files_under(a.keys) == files_under(b.keys) == keys and (
            files_under(a.dir) == files_under(b.dir) == main
        )

    def check_crashed(self) -> str:
        """B as the kill left it: KEYS, whose files it was writing, old or new byte for
        byte; main as it was; both databases and both version stores load."""
        keys = files_under(self.b.keys)
        check_old_or_new(keys, self.allowed, where=f" in {KEYS}")
        assert "mine" in keys, "B's own file is gone"
        assert files_under(self.b.dir) == MAIN_FILES, "main changed"
        load_db(self.b.db)
        load_db(self.kdb(self.b))
        store_versions(group_versions(self.b.db, KEYS))
        store_versions(self.work / "b.versions")
        placed = sum(1 for p, d in K_NEW.items() if keys.get(p) == d)
        deleted = sum(1 for p in self.gone if p not in keys)
        temps = sum(1 for p in keys if is_temp(p))
        return (f"{placed}/{len(K_NEW)} received in place, {deleted}/2 deleted,"
                f" {temps} temp file(s)")  # fmt: skip

    def meanwhile(self) -> None:
        """Writes made after the crash, before B is back, in both groups: each must win."""
        self.write_meanwhile(self.a.keys, self.b.keys)
        put(self.a.dir / "wireless", self.main_final["wireless"])
        put(self.b.dir / "dhcp", self.main_final["dhcp"])

    def check_converged(self, main: dict[str, bytes], keys: dict[str, bytes],
                        deleted: set[str]) -> None:  # fmt: skip
        ok = wait_for(lambda: self.converged(main, keys), 20)
        check_last_writes(files_under(self.a.keys), files_under(self.b.keys), keys, deleted)
        assert ok, f"not converged: main {files_under(self.a.dir)} / {files_under(self.b.dir)}"
        assert wait_for(lambda: self.recorded(self.b, main, keys, deleted), 10), "not recorded"
        check_kept(group_versions(self.b.db, KEYS), self.replaced, f"B's {KEYS}")
        assert "Traceback" not in self.b.text(), self.b.text()


def test_a_daemon_killed_at_every_crash_point_of_a_second_groups_session_loses_nothing(
    crash_path,
):
    """The v2 connecting side with two groups: daemon B, with main and KEYS, takes
    A's changes of KEYS over its live link, traced once (its points must be the
    live step's, conftest.CRASH_POINTS, and at most those a recovery reaches
    besides: a file staged twice now and then), then killed at each in turn
    (the first call; the last of the renames and unlinks: the last file), as
    tests/test_live_crash.py does for main alone.  Each time KEYS, whose files
    were being written, holds old or new contents byte for byte, main is as it
    was, both groups' databases and version stores load; then, after writes in
    both groups on both nodes while B is down, B started again converges both
    groups to those last writes, with nothing lost and no deleted file back."""
    s = TwoGroups(crash_path)
    try:
        trace = crash_path / "trace"
        s.traced_run(trace)
        hits = traced(trace)
        reached = {name for name, _ in hits}
        # (and now and then a file staged twice, the second discarded: syncdir.unlink.temp)
        live = expected_points("live")
        assert live <= reached <= live | expected_points("live-recovery"), f"changed: {hits}"
        todo = crash_cases(hits, last_of=("syncdir.rename", "syncdir.unlink"))
        t0 = time.monotonic()
        rows, failures = kill_each(
            todo,
            lambda case: s.kill_and_recover(*case, {}),
            after=s.stop,
            detail=lambda: f"\nB:\n{s.b.text()[-3000:]}",
        )
        took = time.monotonic() - t0
        print(f"\ntwo groups: {len(reached)} crash points, {len(hits)} calls; killed at"
              f" {len(todo)} in {took:.1f} s", *rows, sep="\n  ")  # fmt: skip
        assert not failures, "\n".join(failures)
    finally:
        s.stop()
