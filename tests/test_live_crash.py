"""A daemon killed at each crash point of its live link's write path, then restarted.

tests/test_crash_points.py does this for a receiving `owsync connect`.  Here
the receiver is daemon B, started while daemon A holds changes it has not
seen: replaced files (their old contents kept in B's version store), new
files (one in a new directory, one of several chunks), A's deletions
(tombstones), a file B edited too but earlier (a conflict: B's edit is kept
as a version), and a file of B's own.  B's first scan records its edit (the
journal), then its live link with A takes the rest in short steps
(``LocalNode.apply``: versions kept, files put in place, deletions, the
journal appended).

A first run, traced (``OWSYNC_CRASH_TRACE``, see owsync/io/faults.py), lists
every crash point B hits until both trees are the same; the list must be
exactly the points conftest.CRASH_POINTS says the live step reaches.  Then,
from the same initial state each time, B is killed with SIGKILL at the first
call of each point (the last one too, where that is another moment of the
step) and:

- it did die of SIGKILL there; every file of B is its old content or A's
  new one, byte for byte, no temp file in place; B's database (its journal
  replayed) and its version index load, each version with its content;
- meanwhile A re-creates a file it had deleted and edits a new one; B, down,
  edits a replaced file, re-creates a file A deleted and deletes one;
- B started again: both trees converge to those last writes, no deleted
  file back, no newer write lost, no temp file; B's database records that
  state, and its store keeps every content A's writes and deletions replaced
  on B, B's losing edit among them (not those B's own later edits replaced
  first: a received file's base keeps its hash alone on the live link).

The runs after a crash are traced too: what they reach beyond the first
run's points is what conftest.CRASH_POINTS names as the recovery's.
``OWSYNC_CRASH_POINTS=all`` kills B at every call; ``OWSYNC_CRASH_POINT=NAME:N``
replays one.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import (
    DaemonCrashPair,
    DaemonNode,
    allowed_contents,
    armed,
    check_kept,
    check_last_writes,
    check_old_or_new,
    check_records,
    crash_cases,
    expected_points,
    files_under,
    is_temp,
    kill_each,
    load_db,
    node_files,
    owsync_cmd,
    put,
    records_hold,
    shm_dir,
    store_versions,
    strace_cmd,
    traced,
    unpointed_calls,
    wait_for,
)

OLD = {f"keep{i}": f"v1 {i}\n".encode() for i in range(4)}
OLD |= {f"gone{i}": f"deleted on a {i}\n".encode() for i in range(2)}
OLD["conf"] = b"option x 1\n"
NEW = {f"keep{i}": f"v2 {i}\n".encode() * (i + 1) for i in range(3)}
NEW |= {"sub/new": b"in a new directory\n", "new0": b"new on a\n", "conf": b"option x 3\n"}
NEW["big"] = os.urandom(150_000)  # several chunks
B_EDIT = b"option x 2 (b, earlier than a)\n"
MINE = b"written on b\n"


def tree(d: DaemonNode) -> dict[str, bytes]:
    return files_under(d.dir)


def synced(d: DaemonNode) -> dict[str, bytes]:
    """The synced files (not owsync's temp files, which come and go meanwhile)."""
    return {p: v for p, v in tree(d).items() if not is_temp(p)}


class Live(DaemonCrashPair):
    """Daemons A and B, their state after the setup kept aside to start each run from."""

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.a.configure([self.b.addr])
        self.b.configure([self.a.addr])
        old_t = time.time() - 3600
        for name, data in OLD.items():
            put(self.a.dir / name, data, old_t)
        self.a.start()
        self.b.start()
        try:
            assert wait_for(lambda: synced(self.b) == OLD and records_hold(self.b.db, OLD), 20)
        finally:
            self.b.stop()
        # A changes while B is down, and records it
        for name, data in NEW.items():
            put(self.a.dir / name, data, time.time() - 60)
        for i in range(2):
            (self.a.dir / f"gone{i}").unlink()
        try:
            assert wait_for(lambda: records_hold(self.a.db, NEW, gone={"gone0", "gone1"}), 20)
        finally:
            self.a.stop()
        # then B, A down: its edit of conf, earlier than A's, pending
        put(self.b.dir / "conf", B_EDIT, time.time() - 120)
        put(self.b.dir / "mine", MINE, time.time() - 120)
        self.b.start()
        try:
            assert wait_for(lambda: records_hold(self.b.db, {"conf": B_EDIT, "mine": MINE}), 20)
        finally:
            self.b.stop()
        self.allowed = allowed_contents(OLD, NEW, {"conf": B_EDIT, "mine": MINE})
        # what A's writes and deletions replace on B, whatever moment B died at
        # (B's own edits of keep1 and gone0 after the crash may come first)
        self.replaced = [OLD["keep0"], OLD["keep2"], OLD["gone1"]]
        self.replaced.append(B_EDIT)  # lost to A's later write: a conflict
        self.synced_files = {p: d for p, d in OLD.items() if not p.startswith("gone")} | NEW
        self.synced_files["mine"] = MINE
        self.plan_meanwhile(self.synced_files, edit="keep1", remove="keep3")
        # each node's state: its directory, database, journal and version store
        self.keep([n + x for n in "ab" for x in ("", ".db", ".db.journal", ".versions")])

    # --- what DaemonCrashPair asks -------------------------------------------

    def in_sync(self) -> bool:
        return self.converged(self.synced_files)

    def not_always(self, name: str, n: int) -> bool:
        return n > 1  # a later call: the steps took the files otherwise

    def check_synced(self) -> None:
        self.check_converged(self.synced_files, {"gone0", "gone1"})

    def check_final(self) -> None:
        self.check_converged(self.final, self.deleted)

    # --- checks ---------------------------------------------------------------

    def check_crashed(self) -> str:
        b = tree(self.b)
        check_old_or_new(b, self.allowed)
        assert "mine" in b, "B's own file is gone"
        load_db(self.b.db)
        store_versions(self.work / "b.versions")
        placed = sum(1 for p, d in NEW.items() if b.get(p) == d)
        gone = sum(1 for i in range(2) if f"gone{i}" not in b)
        temps = sum(1 for p in b if is_temp(p))
        return f"{placed}/{len(NEW)} received in place, {gone}/2 deleted, {temps} temp file(s)"

    def meanwhile(self) -> None:
        """Writes made after the crash, before B is back: each must win."""
        self.write_meanwhile(self.a.dir, self.b.dir)

    def converged(self, want: dict[str, bytes]) -> bool:
        return tree(self.a) == tree(self.b) == want

    def check_converged(self, want: dict[str, bytes], deleted: set[str]) -> None:
        ok = wait_for(lambda: self.converged(want), 20)
        check_last_writes(tree(self.a), tree(self.b), want, deleted)
        assert ok, "not converged"
        assert wait_for(lambda: records_hold(self.b.db, want, deleted), 10), "B never recorded it"
        check_records(load_db(self.b.db), want, deleted)
        check_kept(self.work / "b.versions", self.replaced)
        assert "Traceback" not in self.b.text(), self.b.text()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Set up once for the module's tests; each starts from its initial state."""
    with shm_dir(tmp_path_factory.mktemp("live")) as work:
        s = Live(work)
        yield s
        s.stop()


def test_a_daemon_killed_at_every_crash_point_of_its_live_step_loses_nothing(live):
    s, trace = live, live.work / "trace"
    trace.unlink(missing_ok=True)
    t0 = time.monotonic()
    s.traced_run(trace)
    first = time.monotonic() - t0
    hits = traced(trace)
    reached = {name for name, _ in hits}
    assert reached == expected_points("live"), f"the live step's crash points changed: {hits}"
    # the last file's calls (how many files a step takes depends on timing,
    # how many files are put in place or removed does not)
    todo = crash_cases(hits, last_of=("syncdir.rename", "syncdir.unlink"))
    recovery: set[str] = set()
    again = s.work / "trace.again"

    def one(case: tuple[str, int]) -> str:
        again.unlink(missing_ok=True)
        return s.kill_and_recover(*case, armed(trace=again))

    def after() -> None:
        s.stop()  # B's last step done: its trace complete
        recovery.update(h for h, _ in traced(again))

    t0 = time.monotonic()
    rows, failures = kill_each(
        todo,
        one,
        after=after,
        detail=lambda: f"\nB:\n{s.b.text()[-3000:]}\nA:\n{s.a.text()[-3000:]}",
    )
    took = time.monotonic() - t0
    print(f"\nlive: {len(reached)} crash points, {len(hits)} calls (traced in {first:.1f} s);"
          f" killed at {len(todo)} in {took:.1f} s", *rows, sep="\n  ")  # fmt: skip
    assert not failures, "\n".join(failures)
    # what only a run after a crash reaches (a temp file staged, then
    # discarded as B's own edit turned out newer, only at some moments)
    assert recovery - reached <= expected_points("live-recovery"), recovery - reached
    if not os.environ.get("OWSYNC_CRASH_POINT"):
        certain = expected_points("live-recovery") - {"syncdir.unlink.temp"}
        assert certain <= recovery, f"never reached after a crash: {certain - recovery}"


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_every_call_of_the_live_step_goes_through_its_crash_point(live):
    """B's run under strace: each call that changes its directory, database or
    version store comes just after the crash point of its kind."""
    s, trace, out = live, live.work / "trace.strace", live.work / "strace" / "b"
    out.parent.mkdir()
    s.reset()
    s.a.start()
    cmd = strace_cmd(out) + owsync_cmd("daemon", "-f", "-c", str(s.b.conf))
    s.run_b(armed(trace=trace), cmd=cmd)
    try:
        s.check_synced()
    finally:
        # the daemon, not strace: strace would leave it running, detached
        strace = s.b.proc.pid
        for pid in Path(f"/proc/{strace}/task/{strace}/children").read_text().split():
            os.kill(int(pid), signal.SIGTERM)  # our own grandchild, by its PID
        s.stop()
    bad = unpointed_calls(out, node_files(s.work, "b"), trace)
    assert not bad, "calls without their crash point:\n" + "\n".join(bad[:20])
    # a temp file staged, then discarded as B's own edit turned out newer:
    # only when strace slows B at that moment (as after a crash, above)
    seen, want = {name for name, _ in traced(trace)}, expected_points("live")
    assert want <= seen <= want | {"syncdir.unlink.temp"}, (want - seen, seen - want)
