"""Churn: daemons in a full mesh, random changes and restarts, then the newest write everywhere.

Three (long setting: five) real `owsync daemon` processes in a full mesh, encrypted.
Each round makes a few changes on random nodes, running or stopped: creates, edits,
deletes, re-creates of deleted names, renames, and the same file written on two or
three nodes in the same instant.  Between rounds a daemon is sometimes stopped (SIGTERM
or SIGKILL) and started again a round or two later, and the pause between rounds varies,
so that changes land while sessions run.  When the churn stops, every tree must be
identical within seconds and equal to an oracle of what was written when: the newest
write of each path (its content, and its mtime on disk and in every database), and no
file where the newest event was a deletion.

The oracle is exact, not a guess at timing:

- every write goes in atomically (a hidden temp file, its mtime set, renamed into
  place) with an mtime of its own, strictly increasing and never ahead of the clock,
  so that the order of the mtimes is the order of the writes;
- a deletion counts from its tombstone, which the deleting node stamps with the time
  the scan that finds the file gone began (``state.reconcile``); the test reads that
  stamp from the node's database and touches the path nowhere until then;
- a file is deleted only on a node whose database has it live, newer than every
  deletion of it (a file its node never scanned leaves no tombstone, by design), and,
  if the newest write of it was made on that node, in that version (see deletable());
- every write's content is new to its path: content a node already has is not a new
  version (a touch is not a write).

Two mixed cases keep one node apart: one of ours that speaks v1 only
(OWSYNC_MAX_PROTOCOL=1), held to the same oracle; and a real owsync 1.2.0 daemon
(OWSYNC_C_BIN), held to what 1.2.0 can do (see test_churn_with_an_owsync_1_2_0_node and
Churn.converge_mixed), then to the exact oracle once no two events race.

Two sync groups (issue 17): every node also has a second group, SECOND, on a
directory of its own; the oracle names its paths "extra:REL" and holds each group
to the same rules, a file in the wrong group's directory being one never written
there.  With a v1-only node, SECOND is synced among the others only, and the v1
node's own SECOND directory is left as it was.

OWSYNC_CHURN_ROUNDS sets the rounds (CI: 10, with each of 4 seeds; the long setting runs
100 or more), OWSYNC_CHURN_NODES the daemons (CI: 3; long setting 5), OWSYNC_CHURN_SEED
replays one seed: its choices, not the machine's timing.  A failure names the seed and
the round.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    CDaemonNode,
    DaemonNode,
    base_env,
    c_bin,
    common_port,
    group_conf,
    group_db,
    tracked,
    wait_for,
)

from owsync.core.state import CorruptDatabase, Record
from owsync.io import database
from owsync.io.syncdir import is_temp_name

ROUNDS = int(os.environ.get("OWSYNC_CHURN_ROUNDS", "10"))
NODES = int(os.environ.get("OWSYNC_CHURN_NODES", "3"))
SEEDS = (
    [int(os.environ["OWSYNC_CHURN_SEED"])] if os.environ.get("OWSYNC_CHURN_SEED") else [1, 2, 3, 4]
)
CONVERGE_S = 30.0  # then: every tree identical and as the oracle says
CONVERGE_C_S = 90.0  # the same with 1.2.0, which polls every C_POLL_S seconds
C_POLL_S = 2  # 1.2.0's poll_interval in the test (default 30): it finds its own writes so
STOP_S = 15.0  # SIGTERM: the daemon waits 10 s at most for its sessions
TOMBSTONE_S = 20.0  # after the churn: every deletion's tombstone stamped
DIRS = ("", "sub/", "sub/deep/")
# a session that failed because its peer was down: stopped, killed, or not started yet
DOWN = re.compile(
    r"(?:sync|link) with \[?([0-9.a-f:]+?)\]?(?::\d+)?(?:,\S+)? failed: (?:cannot connect:"
    r" Connection refused|peer closed the connection|connection lost|the peer gave the"
    r" session up: the peer is shutting down)"
)
PAUSES = (0, 0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8)  # between rounds
SECOND = "extra"  # the second sync group of the two-group runs: a directory of its own
MARK = SECOND + ":"  # the oracle's name of a path in it: "extra:sub/f3"


def is_c(node) -> bool:
    return isinstance(node, CDaemonNode)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Event:
    """One write or deletion of a path, as the oracle orders them."""

    path: str
    time_ms: int  # a write: the mtime it was given; a deletion: its tombstone's stamp
    data: bytes | None  # None: a deletion
    round: int
    node: str
    what: str

    @property
    def key(self) -> tuple[int, bool]:
        return (self.time_ms, self.data is not None)  # on a tie a live file wins (plan.py)

    def __str__(self) -> str:
        body = f"sha {sha(self.data)[:12]}" if self.data is not None else "tombstone"
        return f"round {self.round} {self.what} on {self.node} at {self.time_ms} ({body})"


@dataclass
class PendingDelete:
    path: str
    node: DaemonNode
    round: int
    what: str
    seen_ms: int  # the version the node's database had live: its tombstone comes later


class Churn:
    def __init__(
        self,
        nodes: list[DaemonNode],
        seed: int,
        v1_only: tuple[str, ...] = (),
        groups: bool = False,
    ) -> None:
        self.v1_only = v1_only
        self.groups = groups  # every node has SECOND too (node.second), but v1-only ones sync main
        self.nodes = nodes
        self.seed = seed
        self.rng = random.Random(seed)
        self.round = -1
        self.events: dict[str, list[Event]] = {}
        self.pending: list[PendingDelete] = []
        self.seen: dict[str, set[str]] = {}  # path -> hashes ever written there
        self.last_ms = 0
        self.seq = 0
        self.fresh = 0
        self.down: dict[str, int] = {}  # stopped node -> the round it starts again
        self.stops = {"SIGTERM": 0, "SIGKILL": 0}
        self.ops = dict.fromkeys(
            ("create", "edit", "concurrent", "delete", "recreate", "rename"), 0
        )
        self.max_down = max(1, (len(nodes) - 1) // 2)
        self.unsaved: list[str] = []  # what SIGKILL left a database without
        self.c_deaths = 0  # 1.2.0 killed by SIGPIPE (a peer hung up on it), started again
        self.c_decided: list[str] = []  # paths 1.2.0's clock decided (converge_mixed)
        self.ours = [n for n in nodes if not is_c(n)]

    # --- reporting -----------------------------------------------------------

    def where(self) -> str:
        when = (
            "at the start"
            if self.round < 0
            else "after the churn"
            if self.round >= ROUNDS
            else f"round {self.round} (rounds 0-{ROUNDS - 1})"
        )
        return (
            f"seed {self.seed}, {when}, {len(self.nodes)} nodes"
            f" (replay: OWSYNC_CHURN_SEED={self.seed} OWSYNC_CHURN_ROUNDS={ROUNDS}"
            f" OWSYNC_CHURN_NODES={len(self.nodes)})"
        )

    def logs(self, lines: int = 40) -> str:
        out = []
        for n in self.nodes:
            tail = n.text().splitlines()[-lines:]
            out.append(f"--- {n.name} log, last {len(tail)} lines ---\n" + "\n".join(tail))
        return "\n".join(out)

    def fail(self, msg: str) -> None:
        if self.unsaved:
            msg += "\nSIGKILL left a deletion out of a database:\n" + "\n".join(self.unsaved)
        pytest.fail(f"{self.where()}: {msg}\n{self.logs()}", pytrace=False)

    # --- the clock of writes ---------------------------------------------------

    def next_ms(self, after: int = 0) -> int:
        """A write's mtime: 2 ms past every earlier one and past ``after``, not ahead
        of the clock (a deletion's stamp, taken later, is then always later)."""
        t = max(self.last_ms + 2, after + 2, now_ms())
        while now_ms() < t:
            time.sleep(0.001)
        self.last_ms = t
        return t

    # --- what the oracle knows ---------------------------------------------------

    def latest(self, path: str) -> Event | None:
        evs = self.events.get(path)
        return max(evs, key=lambda e: e.key) if evs else None

    def newest_ms(self, path: str) -> int:
        return max((e.time_ms for e in self.events.get(path, ())), default=0)

    def locked(self, path: str) -> bool:
        return any(p.path == path for p in self.pending)

    def live(self) -> list[str]:
        return sorted(
            p for p in self.events if not self.locked(p) and self.latest(p).data is not None
        )

    def gone(self) -> list[str]:
        return sorted(p for p in self.events if not self.locked(p) and self.latest(p).data is None)

    def record(self, ev: Event) -> None:
        self.events.setdefault(ev.path, []).append(ev)

    def expected(self) -> dict[str, str]:
        out = {}
        for path in self.events:
            ev = self.latest(path)
            if ev.data is not None:
                out[path] = sha(ev.data)
        return out

    # --- one node's state ----------------------------------------------------------

    # --- the groups ----------------------------------------------------------------

    def holds(self, node: DaemonNode, path: str) -> bool:
        """Whether ``node`` syncs the group of ``path``: main, every node; SECOND, every
        node but those that speak v1 only (protocol 1 syncs main alone)."""
        return not path.startswith(MARK) or (self.groups and node.name not in self.v1_only)

    def members(self, path: str) -> list[DaemonNode]:
        return [n for n in self.nodes if self.holds(n, path)]

    def file(self, node: DaemonNode, path: str) -> Path:
        if path.startswith(MARK):
            return node.second / path[len(MARK) :]
        return node.dir / path

    def roots(self, node: DaemonNode) -> list[tuple[str, Path, Path]]:
        """(the oracle's prefix, directory, database) of each group ``node`` is held to."""
        out = [("", node.dir, node.db)]
        if self.holds(node, MARK):
            out.append((MARK, node.second, group_db(node.db, SECOND)))
        return out

    def writer(self, node: DaemonNode, path: str) -> DaemonNode:
        """``node``, or where it does not sync the path's group, another that does."""
        return node if self.holds(node, path) else self.rng.choice(self.members(path))

    # --- one node's state ----------------------------------------------------------

    def db(self, node: DaemonNode) -> dict[str, Record]:
        if is_c(node):  # 1.2.0's JSON database
            return {
                path: Record(path, r["hash"], int(r["mtime"]), int(r["size"]), r["mode"],
                             bool(r["deleted"]))
                for path, r in node.records().items()
            }  # fmt: skip
        out = {}
        for prefix, _, db in self.roots(node):
            try:
                records = database.load(str(db), set_aside=False)
            except (FileNotFoundError, CorruptDatabase):
                continue  # not saved yet (it is replaced atomically, never half-written)
            out.update((prefix + path, rec) for path, rec in records.items())
        return out

    def tree(self, node: DaemonNode) -> dict[str, str]:
        out = {}
        for prefix, top, _ in self.roots(node):
            out.update((prefix + rel, h) for rel, h in self.dir_tree(node, top).items())
        return out

    @staticmethod
    def dir_tree(node: DaemonNode, top: Path) -> dict[str, str]:
        out = {}
        for p in top.rglob("*"):
            rel = p.relative_to(top).as_posix()
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            if is_c(node) and ".tmp" in rel:
                continue  # 1.2.0's temp file, which it never syncs (its session died in it)
            try:
                if p.is_file() and not p.is_symlink():
                    out[rel] = sha(p.read_bytes())
            except FileNotFoundError:
                pass  # removed by a session while we looked
        return out

    def running(self) -> list[DaemonNode]:
        return [n for n in self.nodes if n.name not in self.down]

    # --- operations ------------------------------------------------------------

    def content(self, path: str, node: DaemonNode) -> bytes:
        self.seq += 1
        head = f"{path} #{self.seq} by {node.name} in round {self.round} (seed {self.seed})\n"
        pad = "".join(self.rng.choices("abcdefghij\n", k=self.rng.randint(50, 500)))
        return (head + pad).encode()

    def fresh_name(self, node: DaemonNode | None = None) -> str:
        """A new path, in main or (a node that syncs it, if ``node`` is given) SECOND."""
        self.fresh += 1
        name = f"{self.rng.choice(DIRS)}f{self.fresh}"
        if self.groups and (node is None or self.holds(node, MARK)) and self.rng.random() < 0.5:
            return MARK + name
        return name

    def put(self, node: DaemonNode, path: str, tmp: Path, data: bytes, what: str) -> None:
        """Give the hidden ``tmp`` its mtime and rename it to ``path``: one new version."""
        t = self.next_ms(after=self.newest_ms(path))
        os.utime(tmp, ns=(t * 1_000_000, t * 1_000_000))
        os.rename(tmp, self.file(node, path))
        self.record(Event(path, t, data, self.round, node.name, what))
        self.seen.setdefault(path, set()).add(sha(data))

    def hidden(self, node: DaemonNode, path: str) -> Path:
        target = self.file(node, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.seq += 1
        if is_c(node):  # 1.2.0 skips a leading dot only: sub/.churn-1 would be a file to it
            return node.dir / f".churn-{self.seq}"
        return target.parent / f".churn-{self.seq}"

    def write(self, node: DaemonNode, path: str, what: str) -> None:
        data = self.content(path, node)
        tmp = self.hidden(node, path)
        tmp.write_bytes(data)
        self.put(node, path, tmp, data, what)

    def deletable(self) -> list[tuple[DaemonNode, str, int]]:
        """(node, path, mtime of its live record) where a deletion is well defined.

        The file is on the node's disk and live in its database, newer there than
        every deletion of it (none is on its way to the node: the node's own
        deletion then always stamps a tombstone of its own, after that version).
        And if the newest write of the path was made on this node, the node has
        scanned it: a tombstone is stamped with the time its scan began, which may
        be just before the unlink, and an unscanned write that the unlink makes
        vanish must not be the version that such a stamp would lose to."""
        out = []
        for n in self.nodes:
            for path, rec in sorted(self.db(n).items()):
                if path not in self.events or rec.deleted or self.locked(path):
                    continue
                tombs = [e.time_ms for e in self.events[path] if e.data is None]
                writes = [e for e in self.events[path] if e.data is not None]
                newest = max(writes, key=lambda e: e.time_ms, default=None)
                if newest and newest.node == n.name and sha(newest.data) != rec.hash:
                    continue
                if rec.mtime > max(tombs, default=0) and self.file(n, path).is_file():
                    out.append((n, path, rec.mtime))
        return out

    def unlink(
        self, node: DaemonNode, path: str, seen_ms: int, what: str, into: Path | None = None
    ) -> bool:
        """Delete (or move to the hidden ``into``) ``path`` on ``node``; the deletion
        counts once the node's tombstone is seen."""
        newest = self.newest_ms(path)
        while now_ms() < newest + 2:  # after the newest write, never in its millisecond
            time.sleep(0.001)
        try:
            if into is None:
                os.unlink(self.file(node, path))
            else:
                os.rename(self.file(node, path), into)
        except FileNotFoundError:
            return False  # a session removed it meanwhile (an older deletion arriving)
        self.pending.append(PendingDelete(path, node, self.round, what, seen_ms))
        return True

    def op_create(self) -> None:
        node = self.rng.choice(self.nodes)
        self.write(node, self.fresh_name(node), "create")

    def op_edit(self) -> bool:
        live = self.live()
        if not live:
            return False
        node, path = self.rng.choice(self.nodes), self.rng.choice(live)
        self.write(self.writer(node, path), path, "edit")
        return True

    def op_concurrent(self) -> bool:
        """The same path written on two or three nodes at once (sometimes a new one)."""
        live = self.live()
        path = self.rng.choice(live) if live and self.rng.random() < 0.75 else self.fresh_name()
        pool = self.members(path)
        k = self.rng.randint(2, min(3, len(pool)))
        for n in self.rng.sample(pool, k):
            self.write(n, path, f"concurrent write ({k} nodes)")
        return True

    def op_delete(self) -> bool:
        cands = self.deletable()
        if not cands:
            return False
        node, path, seen_ms = self.rng.choice(cands)
        return self.unlink(node, path, seen_ms, "delete")

    def op_recreate(self) -> bool:
        gone = self.gone()
        if not gone:
            return False
        node, path = self.rng.choice(self.nodes), self.rng.choice(gone)
        self.write(self.writer(node, path), path, "re-create")
        return True

    def op_rename(self) -> bool:
        """A real move, through a hidden name where the file takes an mtime of its own."""
        cands = self.deletable()
        if not cands:
            return False
        node, old, seen_ms = self.rng.choice(cands)
        gone = [p for p in self.gone() if p != old]
        gone = [p for p in gone if self.holds(node, p)]
        # (in the two-group runs, a move may go from one group to the other)
        new = self.rng.choice(gone) if gone and self.rng.random() < 0.3 else self.fresh_name(node)
        tmp = self.hidden(node, new)
        if not self.unlink(node, old, seen_ms, f"rename to {new}", into=tmp):
            return False
        data = tmp.read_bytes()
        if sha(data) in self.seen.get(new, set()):  # moved back: not a new version there
            new = self.fresh_name(node)
            dest = self.hidden(node, new)
            os.rename(tmp, dest)
            tmp = dest
        self.put(node, new, tmp, data, f"rename from {old}")
        return True

    def one_op(self) -> None:
        kinds = ["create", "edit", "concurrent", "delete", "recreate", "rename"]
        weights = [3, 3, 2, 2.5, 1.5, 1.5]
        while True:
            kind = self.rng.choices(kinds, weights)[0]
            if kind == "create":
                self.op_create()
                break
            if getattr(self, f"op_{kind}")():
                break
        self.ops[kind] += 1

    # --- tombstones ------------------------------------------------------------

    def resolve(self) -> None:
        """Deletions whose tombstone the deleting node has stamped become events."""
        if not self.pending:
            return
        dbs = {n.name: self.db(n) for n in {p.node for p in self.pending}}
        left = []
        for p in self.pending:
            rec = dbs[p.node.name].get(p.path)
            if rec is not None and not rec.deleted and self.restamped(rec, p.seen_ms):
                self.c_decided.append(
                    f"{p.path}: deleted on {p.node.name} in round {p.round} ({p.what}), then"
                    f" a version that 1.2.0 re-stamped {rec.mtime} came back"
                )
                continue
            if rec is None or not rec.deleted:
                left.append(p)
                continue
            if rec.mtime < p.seen_ms:  # not this deletion's: where would it come from?
                self.fail(
                    f"{p.path}: deleted on {p.node.name} in round {p.round}, where it was live"
                    f" at {p.seen_ms}, and now a tombstone of {rec.mtime} there: "
                    f"{[str(e) for e in self.events[p.path]]}"
                )
            self.record(Event(p.path, rec.mtime, None, p.round, p.node.name, p.what))
        self.pending = left

    def restamped(self, rec: Record, after: int) -> bool:
        """With 1.2.0 in the mesh: ``rec`` is a version newer than ``after`` that
        1.2.0 stamped with its own clock (no write of the test has its mtime),
        which beats a deletion stamped before it, as last-writer-wins says."""
        if not any(is_c(n) for n in self.nodes) or rec.mtime <= after:
            return False
        return rec.mtime not in {e.time_ms for e in self.events.get(rec.path, ())}

    # --- daemons ---------------------------------------------------------------

    def start(self, node: DaemonNode) -> None:
        if is_c(node):
            node.start()  # returns once it listens
            self.down.pop(node.name, None)
            return
        banner = f" daemon: {node.dir}, listening"
        before = node.text().count(banner)
        # faulthandler: a daemon that ignores SIGTERM is sent SIGABRT, and says where it was
        env = base_env(None) | {"PYTHONFAULTHANDLER": "1"}
        if node.name in self.v1_only:  # speaks v1, as owsync 1.2.0: sessions, no live link
            env["OWSYNC_MAX_PROTOCOL"] = "1"
        node.start(env=env, probe=False)
        up = wait_for(
            lambda: node.text().count(banner) > before or node.proc.poll() is not None, 20
        )
        if not up or node.proc.poll() is not None:
            self.fail(f"{node.name} did not start again")
        self.down.pop(node.name, None)

    def stop(self, node: DaemonNode, sig: signal.Signals, back: int) -> None:
        if sig == signal.SIGTERM:
            node.proc.send_signal(sig)
            try:
                node.proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                node.proc.send_signal(signal.SIGABRT)  # its threads' stacks, into its log
                node.proc.wait(10)
                node.stop()
                tail = "\n".join(node.text().splitlines()[-150:])
                self.fail(f"{node.name} did not stop within {STOP_S:.0f} s of SIGTERM:\n{tail}")
        rc = node.stop(sig)
        if sig == signal.SIGTERM and rc != 0:
            self.fail(f"{node.name} exited {rc} on SIGTERM")
        if sig == signal.SIGKILL:  # noted, to explain a failure: a file live in the
            # database and gone from the disk, not by the test's hand, is a deletion
            # from a peer that was applied and not yet saved
            mine = {p.path for p in self.pending if p.node is node}
            for path, rec in sorted(self.db(node).items()):
                if not rec.deleted and path not in mine and not self.file(node, path).is_file():
                    self.unsaved.append(
                        f"round {self.round}: {node.name} killed with {path} live in its"
                        f" database ({rec.mtime}) and gone from its disk"
                    )
        self.stops[sig.name] += 1
        self.down[node.name] = back

    def check_alive(self) -> None:
        for n in self.running():
            if n.proc.poll() is None:
                continue
            if is_c(n) and n.proc.returncode == -signal.SIGPIPE:
                # 1.2.0 does not ignore SIGPIPE: a peer that hangs up while it writes
                # (one of ours stopped mid-session) kills it, daemon and all
                self.c_deaths += 1
                n.stop()
                self.start(n)
                continue
            self.fail(f"{n.name} exited on its own with status {n.proc.returncode}")

    def between_rounds(self) -> None:
        for n in self.nodes:
            if self.down.get(n.name, ROUNDS + 1) <= self.round + 1:
                self.start(n)
        force = None  # every run stops a daemon both ways at least once
        if self.round >= ROUNDS // 3 and not self.stops["SIGTERM"]:
            force = signal.SIGTERM
        elif self.round >= 2 * ROUNDS // 3 and not self.stops["SIGKILL"]:
            force = signal.SIGKILL
        if len(self.down) < self.max_down and (force or self.rng.random() < 0.25):
            node = self.rng.choice([n for n in self.running() if not is_c(n)])
            sig = force or (signal.SIGKILL if self.rng.random() < 0.4 else signal.SIGTERM)
            if self.rng.random() < 0.25:
                self.stop(node, sig, self.round + 1)
                self.start(node)  # at once
            else:
                self.stop(node, sig, self.round + 1 + self.rng.randint(1, 2))

    # --- the run ---------------------------------------------------------------

    def churn(self) -> None:
        for self.round in range(ROUNDS):
            self.check_alive()
            self.resolve()
            for _ in range(self.rng.randint(1, len(self.nodes) + 1)):
                self.one_op()
            time.sleep(self.rng.choice(PAUSES))
            self.resolve()
            self.between_rounds()
        self.round = ROUNDS  # the churn is over
        for n in self.nodes:
            if n.name in self.down:
                self.start(n)
        self.check_alive()

    def settle(self) -> float:
        """Wait for every tombstone, then for every tree to be the oracle's: the seconds
        from the end of the churn (every daemon running again) to the last check."""
        start = time.monotonic()
        deadline = start + TOMBSTONE_S
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.05)
            self.resolve()
        if self.pending:
            lines = []
            for p in self.pending:
                rec = self.db(p.node).get(p.path)
                on = {n.name: self.tree(n).get(p.path, "-")[:12] for n in self.nodes}
                lines.append(
                    f"{p.path}: deleted on {p.node.name} in round {p.round} ({p.what}), its"
                    f" database still says {rec}; on disk: {on}; history:"
                    f" {[str(e) for e in self.events[p.path]]}"
                )
            self.fail(
                f"deletions never recorded as tombstones within {TOMBSTONE_S:.0f} s "
                "(a deleted file came back?):\n" + "\n".join(lines)
            )
        want = self.expected()
        ok = wait_for(
            lambda: all(self.tree(n) == self.held(n, want) for n in self.nodes), CONVERGE_S, 0.1
        )
        took = time.monotonic() - start
        self.check_alive()
        if not ok:
            trees = {n.name: self.tree(n) for n in self.nodes}
            same = all(  # in the groups both sync
                self.held(m, trees[n.name]) == self.held(n, trees[m.name])
                for n in self.nodes
                for m in self.nodes
            )
            how = (
                "the trees are identical, but not the newest writes"
                if same
                else f"the trees still differ after {CONVERGE_S:.0f} s"
            )
            self.fail(f"{how}:\n" + self.diff(want))
        return took

    def held(self, node: DaemonNode, files: dict[str, str]) -> dict[str, str]:
        """What of ``files`` (the oracle's names) ``node`` syncs."""
        return {p: h for p, h in files.items() if self.holds(node, p)}

    def diff(self, want: dict[str, str]) -> str:
        trees = {n.name: self.tree(n) for n in self.nodes}
        dbs = {n.name: self.db(n) for n in self.nodes}
        names = {}
        for evs in self.events.values():
            for e in evs:
                if e.data is not None:
                    names[sha(e.data)] = str(e)
        lines = []
        for path in sorted(set(want).union(*trees.values())):
            got = {n.name: trees[n.name].get(path) for n in self.members(path)}
            if all(h == want.get(path) for h in got.values()):
                continue
            lines.append(f"{path}: expected {self.latest(path) or 'nothing'}")
            for name, h in got.items():
                state = "absent" if h is None else names.get(h, f"unknown content {h[:12]}")
                lines.append(f"    {name}: {state}; its database: {dbs[name].get(path)}")
            for e in self.events.get(path, ()):
                lines.append(f"    history: {e}")
        return "\n".join(lines)

    # --- with owsync 1.2.0 in the mesh -----------------------------------------

    def converge_mixed(self) -> tuple[float, list[str]]:
        """After the churn, with a 1.2.0 node: every tree identical, and each path
        as the oracle says unless 1.2.0's clock decided it.

        1.2.0 stamps a file it receives, and a deletion it applies, with its own
        clock at arrival (docs/PROTOCOL.md), and its sessions run in parallel
        threads on one database without a lock.  A version that reaches it after
        a newer write was made elsewhere thus comes back newer than that write,
        and wins everywhere.  So here a path may end on an older version than
        the oracle's, but only on one that 1.2.0 re-stamped: the winner in our
        databases then carries an mtime that no write or deletion of the test
        had; or, when the newest event was a write on 1.2.0's node, on an older
        version that 1.2.0 wrote over it (it requests what its scan at the
        session's start lacked, and puts it in place without looking again).
        Any other difference is ours, and fails.  Also: every file holds
        content written to its path (nothing torn, nothing invented), a path
        never deleted is present, and our four databases agree with each other
        and with their disks (in content and deletion; the mtime of one version
        can differ, see ours_disagree).  Returns the seconds taken and the paths 1.2.0
        decided."""
        start = time.monotonic()
        deadline = start + TOMBSTONE_S
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.05)
            self.resolve()
        decided = self.c_decided
        for p in self.pending:
            if not is_c(p.node):
                self.fail(f"deletions never recorded as tombstones: {self.pending}")
            # 1.2.0 tombstones only what its database knows, and a session that
            # saves the database it loaded before another's save loses records:
            # a file it never recorded, deleted, is fetched back from a peer
            decided.append(f"{p.path}: deleted on 1.2.0 ({p.what}), which never recorded it")
        self.pending = []
        same = wait_for(
            lambda: all(self.tree(n) == self.tree(self.nodes[0]) for n in self.nodes[1:]),
            CONVERGE_C_S,
            0.2,
        )
        took = time.monotonic() - start
        self.check_alive()
        if not same:
            self.fail(f"the trees still differ after {CONVERGE_C_S:.0f} s:\n" + self.diff({}))
        final = self.tree(self.nodes[0])
        problems: list[str] = []
        if not wait_for(lambda: not self.ours_disagree(final, problems), 10, 0.1):
            self.fail("our databases do not agree:\n" + "\n".join(problems))
        dbs = [self.db(n) for n in self.ours]
        for path in sorted(set(self.events) | set(final)):
            got = final.get(path)
            if got is not None and got not in self.seen.get(path, ()):
                self.fail(f"{path}: content never written there:\n" + self.diff({}))
            ev = self.latest(path)
            want = sha(ev.data) if ev and ev.data is not None else None
            if got == want:
                continue
            # they agree on the version (above), not always on its mtime: the node
            # that had it from its writer keeps the write's, the others 1.2.0's
            recs = [db[path] for db in dbs if path in db]
            stamps = {e.time_ms for e in self.events.get(path, ())}
            deleted_ever = any(e.data is None for e in self.events.get(path, ()))
            rec = next((r for r in recs if r.mtime not in stamps), recs[0] if recs else None)
            restamped = rec is not None and rec.mtime not in stamps
            # 1.2.0 plans on the scan it made as its session began and writes what it
            # requested without looking again: a write made on it meanwhile is lost
            overwritten = (
                rec is not None
                and ev is not None
                and ev.node in {n.name for n in self.nodes if is_c(n)}
                and rec.mtime < ev.time_ms
            )
            if not (restamped or overwritten) or (got is None and not deleted_ever):
                self.fail(
                    f"{path}: {'absent' if got is None else got[:12]} everywhere, not the"
                    f" newest event ({ev}), and our record {rec} is not one 1.2.0 stamped,"
                    " nor older than a write on 1.2.0 that 1.2.0 wrote over:\n"
                    + "\n".join(f"    history: {e}" for e in self.events.get(path, ()))
                )
            what = "deleted" if rec.deleted else "an older version"
            decided.append(
                f"{path}: {what} re-stamped {rec.mtime} by 1.2.0 beat {ev}"
                if restamped
                else f"{path}: {ev} was written over by 1.2.0 with {what} of {rec.mtime}"
            )
        return took, decided

    def ours_disagree(self, final: dict[str, str], problems: list[str]) -> list[str]:
        problems.clear()
        dbs = {n.name: self.db(n) for n in self.ours}
        first = dbs[self.ours[0].name]
        for path in sorted(set(self.events) | set(final)):
            recs = {name: db.get(path) for name, db in dbs.items()}
            # the same content, not always the same mtime: a version that reached a
            # node from 1.2.0 first keeps 1.2.0's stamp (a same-content version
            # arriving later changes nothing: no new write)
            # (and no record is a tombstone: a deletion of what a node never had)
            versions = {(r.hash, r.deleted) if r else (None, True) for r in recs.values()}
            if len(versions) > 1:
                problems.append(f"{path}: {recs}")
                continue
            rec = first.get(path)
            live = rec is not None and not rec.deleted
            if live != (path in final) or (live and rec.hash != final[path]):
                problems.append(f"{path}: databases say {rec}, disks {final.get(path)}")
            elif live:
                for n in self.ours:
                    disk = (n.dir / path).stat().st_mtime_ns // 1_000_000
                    if disk != recs[n.name].mtime:
                        problems.append(f"{path}: mtime {disk} on {n.name}'s disk, {recs}")
        return problems

    def tail(self) -> int:
        """Once the mesh has converged: one event for each path, on random nodes:
        a write (1.2.0's node included), or a deletion of a file that is there
        (on ours), or nothing for one that is gone.  No two events race, so 1.2.0's clock
        decides nothing, and the result must be the oracle's, exactly."""
        self.round = ROUNDS + 1
        final = self.tree(self.nodes[0])
        cands: dict[str, list[tuple[DaemonNode, int]]] = {}
        for n, path, seen_ms in self.deletable():
            if not is_c(n):  # see converge_mixed: a deletion 1.2.0 may undo
                cands.setdefault(path, []).append((n, seen_ms))
        count = 0
        for path in sorted(set(self.events) | set(final)):
            ev = self.latest(path)
            lost = ev is not None and ev.data is not None and path not in final
            if path in final and cands.get(path) and self.rng.random() < 0.3:
                node, seen_ms = self.rng.choice(cands[path])
                self.unlink(node, path, seen_ms, "tail delete")
            elif path in final or lost or self.rng.random() < 0.5:
                self.write(self.rng.choice(self.nodes), path, "tail write")
            else:
                continue
            count += 1
        self.round = ROUNDS
        return count

    def check_versions(self) -> None:
        """The newest write won as itself: its mtime on every disk and in every database
        (which a session saves just after its last file is in place: waited for)."""
        problems: list[str] = []
        if not wait_for(lambda: not self.version_problems(problems), 10, 0.1):
            self.fail("versions differ from the newest writes:\n" + "\n".join(problems))

        def temps() -> list[Path]:
            out: list[Path] = []
            for n in self.ours:
                for _, top, _ in self.roots(n):
                    out += [p for p in top.rglob("*") if is_temp_name(p.name)]
                    out += top.rglob(".churn-*")
            return out

        # a session under way stages its files in temps (with 1.2.0 in the mesh,
        # sessions with it still run after the trees are equal): left means left after it
        if not wait_for(lambda: not temps(), 10, 0.1):
            self.fail(f"temp files left: {temps()}")

    def check_logs(self) -> None:
        """Sessions fail under churn (busy directories, peers stopped mid-session), but
        never with a defect's traceback, and no database is found corrupt."""
        words = ("internal error", "unexpectedly", "Traceback", "corrupt")
        for n in self.ours:
            bad = [line for line in n.text().splitlines() if any(w in line for w in words)]
            if bad:
                self.fail(f"{n.name} logged:\n" + "\n".join(bad[:20]))

    def error_lines(self) -> tuple[list[str], int]:
        """Our daemons' error lines, but for those that say a peer was down: a
        connection refused or cut by one of ours that the churn stopped (or had
        not started yet).  What is left is a failure in normal operation, and
        the count of lines left aside as 1.2.0's own failures: now and then,
        with several sessions at once, 1.2.0 fails to read a peer's state
        ("Failed to receive SyncState", "Session error" in its log) and hangs
        up; as many lines of ours saying that 1.2.0 closed or reset a session
        are set aside as its log shows such failures."""
        stopped = {n.host for n in self.ours}  # each was down once, before its start
        c_hosts = {n.host for n in self.nodes if is_c(n)}
        if self.c_deaths:  # 1.2.0, down after SIGPIPE killed it, until started again
            stopped |= c_hosts
        budget = sum(
            line.count("Failed to receive") + line.count("Session error")
            for n in self.nodes
            if is_c(n)
            for line in n.text().splitlines()
        )
        out = []
        set_aside = 0
        for n in self.ours:
            for line in n.text().splitlines():
                if "error" not in line.lower():
                    continue
                m = DOWN.search(line)
                if m and m.group(1) in stopped:
                    continue
                if m and m.group(1) in c_hosts and "refused" not in line and set_aside < budget:
                    set_aside += 1
                    continue
                out.append(f"{n.name}: {line}")
        return out, set_aside

    def version_problems(self, problems: list[str]) -> list[str]:
        problems.clear()
        for path in sorted(self.events):
            ev = self.latest(path)
            for n in self.ours:  # 1.2.0 stamps what it receives with its own clock
                if not self.holds(n, path):
                    continue
                rec = self.db(n).get(path)
                if ev.data is None:
                    if rec is not None and not rec.deleted:
                        problems.append(f"{path}: {n.name}'s database has it live: {rec}")
                    continue
                disk = self.file(n, path).stat().st_mtime_ns // 1_000_000
                # with 1.2.0 in the mesh, a node may have had the write from it first,
                # with 1.2.0's later stamp: the same content, never on the writer
                ok = rec is not None and (
                    rec.mtime == ev.time_ms
                    or (n.name != ev.node and self.restamped(rec, ev.time_ms))
                )
                if not ok or rec.deleted or disk != rec.mtime or rec.hash != sha(ev.data):
                    problems.append(
                        f"{path}: newest write {ev}; {n.name} has mtime {disk} on disk and"
                        f" {rec} in its database"
                    )
        return problems


def make_node(root, name, c=False, **kw):
    return (CDaemonNode if c else DaemonNode)(root, name, **kw)


@pytest.fixture
def mesh(tmp_path):
    yield from tracked(tmp_path, make_node)


V1_SEEDS = [1] if not os.environ.get("OWSYNC_CHURN_SEED") else SEEDS


@pytest.mark.parametrize("seed", SEEDS)
def test_churn_with_restarts_converges_on_the_newest_writes(mesh, seed):
    run_churn(mesh, seed, v1_only=())


@pytest.mark.parametrize("seed", V1_SEEDS)
def test_churn_with_a_node_that_speaks_v1_only(mesh, seed):
    """One node of the mesh speaks protocol v1 only, as owsync 1.2.0 does: the
    others keep live links between themselves and run sessions with it."""
    run_churn(mesh, seed, v1_only=("n0",))


@pytest.mark.skipif(not c_bin(), reason="set OWSYNC_C_BIN to a built owsync 1.2.0 binary")
@pytest.mark.parametrize("seed", V1_SEEDS)
def test_churn_with_an_owsync_1_2_0_node(mesh, seed):
    """n0 is a real owsync 1.2.0 daemon; the others are ours, live-linked to each
    other, running v1 sessions with it.  All listen on one port, each on an
    address of its own (1.2.0 reaches its peers on its own port), 127.0.0.1-N.

    Expected of 1.2.0: it takes part in the churn (writes, deletions and
    concurrent writes are made on it too; it is never stopped: only ours are)
    and ends identical to every other node.  Not expected of it: the newest
    write of a path written on several nodes within seconds (it re-stamps what
    it receives with its own clock; see Churn.converge_mixed), nor surviving a
    peer that hangs up on it while it writes (SIGPIPE kills it: started again,
    counted).  Then one more event per path, none racing another: every node,
    1.2.0 included, must hold exactly the oracle's newest events, and our
    nodes their mtimes (or, but on the writer, the later stamp of 1.2.0 when
    the write reached a node through 1.2.0 before its live link brought it:
    the same content, which then changes nothing)."""
    hosts = [f"127.0.0.{i + 1}" for i in range(NODES)]
    port = common_port(hosts)
    nodes = [mesh("n0", c=True, host=hosts[0], port=port)]
    nodes += [mesh(f"n{i}", host=hosts[i]) for i in range(1, NODES)]
    for n in nodes:
        n.port = port
        peers = [f"{m.host},{n.host}" for m in nodes if m is not n]  # from its own address
        if is_c(n):
            n.configure(peers, poll=C_POLL_S)
        else:
            n.configure(peers)
    churn = Churn(nodes, seed)
    for n in nodes:
        churn.start(n)
    began = time.monotonic()
    churn.churn()
    churned = time.monotonic() - began
    took, decided = churn.converge_mixed()
    events = churn.tail()
    tail = churn.settle()
    churn.check_versions()
    churn.check_logs()
    errors, c_dropped = churn.error_lines()
    want = churn.expected()
    print(
        f"churn with 1.2.0, seed {seed}: {ROUNDS} rounds, {len(nodes)} nodes, ops {churn.ops},"
        f" stops {churn.stops}, 1.2.0 killed by SIGPIPE {churn.c_deaths}; churn {churned:.1f} s,"
        f" identical {took:.1f} s later, {len(decided)} path(s) decided by 1.2.0's clock;"
        f" tail of {events} events: as the oracle says {tail:.1f} s later, {len(want)} files"
        f" live; error lines in our logs: {len(errors)} (and {c_dropped} for sessions that"
        " 1.2.0's log says it failed)"
    )
    for line in decided:
        print("   ", line)
    assert not errors, "\n".join(errors[:20])
    assert want, "nothing was compared"


GROUP_SEEDS = [1, 2] if not os.environ.get("OWSYNC_CHURN_SEED") else SEEDS
APART = b"n0's own, in a group that protocol 1 does not sync\n"


@pytest.mark.parametrize("seed", GROUP_SEEDS)
def test_churn_in_two_groups_converges_in_each(mesh, seed):
    """Every node has main and a second group (SECOND) on a directory of its own;
    the churn writes, deletes and moves files in both (a move may cross from one
    group to the other: a deletion in one, a new file in the other), and each
    group ends as the oracle says, nothing of one in the other."""
    run_churn(mesh, seed, v1_only=(), groups=True)


@pytest.mark.parametrize("seed", V1_SEEDS)
def test_churn_in_two_groups_with_a_node_that_speaks_v1_only(mesh, seed):
    """n0 speaks protocol 1 only: its main is churned and converges with the
    others'; its second group is left alone by them (n0's own file there stays,
    nothing arrives), and the others churn theirs and converge among themselves,
    their status saying that n0 speaks v1 in that group."""
    run_churn(mesh, seed, v1_only=("n0",), groups=True)


def run_churn(mesh, seed: int, v1_only: tuple[str, ...], groups: bool = False) -> None:
    nodes = [mesh(f"n{i}") for i in range(NODES)]
    for n in nodes:
        extra = ""
        if groups:
            n.second = n.dir.parent / f"{n.name}-{SECOND}"
            n.second.mkdir()
            extra = group_conf(SECOND, n.second)
            if n.name in v1_only:
                (n.second / "apart").write_bytes(APART)
        n.configure([m.addr for m in nodes if m is not n], extra=extra)
    churn = Churn(nodes, seed, v1_only, groups)
    for n in nodes:
        churn.start(n)
    began = time.monotonic()
    churn.churn()
    churned = time.monotonic() - began
    took = churn.settle()
    churn.check_versions()
    churn.check_logs()
    want = churn.expected()
    print(
        f"churn seed {seed}: {ROUNDS} rounds, {len(nodes)} nodes, ops {churn.ops},"
        f" stops {churn.stops}; {len(want)} files live, {len(churn.events) - len(want)}"
        f" deleted; churn {churned:.1f} s, identical and as the oracle says {took:.1f} s later"
    )
    if ROUNDS >= 6:
        assert churn.stops["SIGTERM"] and churn.stops["SIGKILL"], churn.stops
    assert want, "the churn left no file at all: nothing was compared"
    if groups:
        check_groups(churn, want)


def check_groups(churn: Churn, want: dict[str, str]) -> None:
    """The two-group runs: both groups were churned and hold files; a v1-only node's
    second group is as it was; the status says each peer's state in SECOND."""
    second = [p for p in churn.events if p.startswith(MARK)]
    assert second and len(second) < len(churn.events), "not both groups churned"
    print(f"    {SECOND}: {len(second)} paths, {sum(p.startswith(MARK) for p in want)} live;"
          f" main: {len(churn.events) - len(second)} paths,"
          f" {sum(not p.startswith(MARK) for p in want)} live")  # fmt: skip
    for n in churn.nodes:
        if n.name in churn.v1_only:
            assert churn.dir_tree(n, n.second) == {"apart": sha(APART)}, "touched by the others"

    def states(n: DaemonNode) -> dict[str, str]:
        row = next(g for g in n.status()["groups"] if g["name"] == SECOND)
        return row["peers"]

    for n in churn.nodes:
        if n.name in churn.v1_only:
            continue
        expect = {m.addr: "v1" if m.name in churn.v1_only else "synced"
                  for m in churn.nodes if m is not n}  # fmt: skip
        assert wait_for(lambda n=n, expect=expect: states(n) == expect, 10), states(n)
