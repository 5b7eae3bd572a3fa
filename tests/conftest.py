"""Helpers for tests that run real owsync processes on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from owrt_chroot import REPO, OpenWrtRoot, skip_reason

from owsync.core import protocol
from owsync.core.crypto import AesGcmCipher, fingerprint
from owsync.core.state import Record, loads_db_doc, replay_journal

HERE = Path(__file__).parent
KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def common_port(hosts: list[str], tries: int = 50) -> int:
    """A port free on every one of ``hosts`` (loopback addresses): owsync 1.2.0
    reaches every peer on its own port, so a mesh with it shares one."""
    for _ in range(tries):
        port = free_port()
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no port free on every one of {hosts}")


def listening_on(host: str, port: int) -> bool:
    """Whether a socket listens on IPv4 host:port (/proc/net/tcp, no probe connection)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":
            return True
    return False


def owsync_cmd(*args: str, clock_offset: float | None = None) -> list[str]:
    if clock_offset is not None:
        return [sys.executable, str(HERE / "clockshift.py"), str(clock_offset), *args]
    return [sys.executable, "-m", "owsync", *args]


# never passed on from the test's own environment: each node gets its own
INHERITED_NOT = ("OWSYNC_KEY", "OWSYNC_MAX_PROTOCOL", "OWSYNC_CRASH_AT", "OWSYNC_CRASH_TRACE",
                 "OWSYNC_STOP_AT", "OWSYNC_WITHOUT")  # fmt: skip


def base_env(key: str | None = KEY, max_protocol: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_NOT}
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    if key:
        env["OWSYNC_KEY"] = key
    if max_protocol is not None:  # 1: a node that speaks v1 only, as owsync 1.2.0
        env["OWSYNC_MAX_PROTOCOL"] = str(max_protocol)
    return env


def refused_in_one_line(*args: str, env: dict[str, str] | None = None, writes_none=()) -> str:
    """Run ``owsync ARGS``, which must refuse to start: exit status 1, one line
    on stderr (returned: bare under a supervisor, prefixed where it logs), and
    none of the paths ``writes_none`` made."""
    r = subprocess.run(owsync_cmd(*args), env=env or base_env(None), capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1, (args, r.stderr)
    (line,) = r.stderr.splitlines()
    made = [str(p) for p in writes_none if os.path.lexists(p)]
    assert not made, f"written: {made}"
    return line


class Child:
    """Holds a process a test started, its output going to a log file.

    Stopped by PID, its own child only; stop() returns the exit status.
    """

    proc: subprocess.Popen | None = None

    def spawn(self, cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
        self._logf = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._logf, stderr=self._logf)
        return self.proc

    def stop(self, sig=signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode


def tracked(tmp_path: Path, cls):
    """A fixture body: make nodes of ``cls`` on demand, stop them all at the end."""
    made = []

    def make(name: str, **kw):
        n = cls(tmp_path, name, **kw)
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()


class Node(Child):
    """One owsync node: a sync directory and a database, driven through the CLI."""

    def __init__(
        self,
        root: Path,
        name: str,
        key: str | None = KEY,
        extra=(),
        include_all=True,
        max_protocol: int | None = None,
    ) -> None:
        self.include_all = include_all
        self.max_protocol = max_protocol
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = root / f"{name}.db"
        self.name = name
        self.key = key
        self.extra = list(extra)  # options on every command (filters, -p, -c ...)
        self.env: dict[str, str] = {}  # variables for every command (crash points ...)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log = root / f"{name}.log"

    def opts(self) -> list[str]:
        opts = ["-d", str(self.dir), "-b", str(self.db), *self.extra]
        if self.include_all and not any(o in ("-i", "--include", "-c") for o in self.extra):
            opts += ["-i", "*"]
        return opts

    def environ(self) -> dict[str, str]:
        return {**base_env(self.key, self.max_protocol), **self.env}

    def run(self, *args: str, clock_offset=None, timeout=60, check=False):
        return subprocess.run(
            owsync_cmd(*args, clock_offset=clock_offset),
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def listen(self, clock_offset=None, host="127.0.0.1", port=None) -> Node:
        self.port = port or free_port()
        args = ["listen", "-H", host, "-P", str(self.port), "-v", *self.opts()]
        seen = self.log.stat().st_size if self.log.exists() else 0  # an earlier run's lines
        self.spawn(owsync_cmd(*args, clock_offset=clock_offset), self.environ(), self.log)
        deadline = time.monotonic() + 15
        while b"listening on" not in self.log.read_bytes()[seen:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"listener did not start: {self.log.read_text()}")
            time.sleep(0.02)
        return self

    def connect(self, other: Node, *extra: str, clock_offset=None, timeout=120):
        return self.run(
            "connect",
            f"127.0.0.1:{other.port}",
            *self.opts(),
            *extra,
            clock_offset=clock_offset,
            timeout=timeout,
        )

    def sync_ok(self, other: Node):
        r = self.connect(other)
        assert r.returncode == 0, r.stderr
        return r

    def wait_log(self, text: str, timeout: float = 5.0) -> str:
        """The listener's log once it contains ``text`` (it is written after the socket closes)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return log

    def files(self) -> dict[str, bytes]:
        out = {}
        for p in sorted(self.dir.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(self.dir))] = p.read_bytes()
        return out

    def write(self, rel: str, data: bytes | str, mtime: float | None = None) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        if mtime is not None:
            os.utime(p, (mtime, mtime))
        return p


@pytest.fixture
def nodes(tmp_path):
    yield from tracked(tmp_path, Node)


def summary(result) -> dict[str, float]:
    """Parse connect's summary line: received 1, sent 0, deleted 0, bytes 887, seconds 0.00"""
    line = result.stdout.strip().splitlines()[-1]
    out = {}
    for part in line.split(", "):
        k, v = part.split(" ")
        out[k] = float(v)
    return out


# Debian's Chromium, as the probe ran it: without the background-networking
# flags it tries hosts this machine's closed network refuses.
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (its own browser download cannot work here)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs playwright (pip install -e '.[test]')")
    exe = chromium_path()
    if exe is None:
        pytest.skip("needs Debian's chromium (.ci/run installs it: apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=BROWSER_ARGS)
        yield b
        b.close()


def armed(trace=None, crash_at=None, stop_at=None) -> dict[str, str]:
    """Variables that arm owsync's crash points (owsync/io/faults.py) in a node:
    ``trace`` a file listing every point hit; ``crash_at`` / ``stop_at``
    ``(name, n)``, SIGKILL / SIGSTOP at the n-th call at point ``name``."""
    env = {}
    if trace is not None:
        env["OWSYNC_CRASH_TRACE"] = str(trace)
    if crash_at is not None:
        env["OWSYNC_CRASH_AT"] = f"{crash_at[0]}:{crash_at[1]}"
    if stop_at is not None:
        env["OWSYNC_STOP_AT"] = f"{stop_at[0]}:{stop_at[1]}"
    return env


def traced(path: Path) -> list[tuple[str, int]]:
    """The crash points a traced run hit, in order: (name, its n-th call)."""
    seen: dict[str, int] = {}
    out = []
    for name in path.read_text().split() if path.exists() else []:
        seen[name] = seen.get(name, 0) + 1
        out.append((name, seen[name]))
    return out


def wait_for(pred, timeout=10.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class DaemonFiles(Child):
    """A daemon's files in ``root`` (its directory NAME, NAME.db, NAME.conf,
    NAME.log) and the address it listens on."""

    def __init__(self, root: Path, name: str, host: str, port: int) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = root / f"{name}.db"
        self.conf = root / f"{name}.conf"
        self.log = root / f"{name}.log"
        self.host = host
        self.port = port
        self.proc: subprocess.Popen | None = None

    def write_conf(self, peers, *more: str, extra: str = "") -> None:
        """Its key=value file: all of its directory synced with ``peers``, the
        lines ``more`` and then ``extra`` besides; root-only (it holds the key)."""
        lines = [
            f"bind_host={self.host}",
            f"port={self.port}",
            f"sync_dir={self.dir}",
            f"database={self.db}",
            f"encryption_key={KEY}",
            *more,
            "include=*",
            *(f"peer={p}" for p in peers),
        ]
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.conf.chmod(0o600)


class DaemonNode(DaemonFiles):
    """One `owsync daemon` with its key=value file, directory, database and log."""

    def __init__(self, root: Path, name: str, host="127.0.0.1") -> None:
        super().__init__(root, name, host, free_port())
        self.sock = root / f"{name}.sock"

    @property
    def addr(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def configure(self, peers, poll=60, extra="") -> DaemonNode:
        self.write_conf(peers, f"control_socket={self.sock}", f"poll_interval={poll}",
                        "log_level=3", extra=extra)  # fmt: skip
        return self

    def start(self, cmd=None, env: dict | None = None, probe: bool = True) -> DaemonNode:
        """Start the daemon; with ``probe``, wait for its configured control socket."""
        cmd = cmd or owsync_cmd("daemon", "-f", "-c", str(self.conf))
        self.spawn(cmd, env or base_env(None), self.log)
        if probe:
            assert wait_for(lambda: self.sock.exists() or self.proc.poll() is not None), self.text()
        assert self.proc.poll() is None, self.text()
        return self

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def ctl(self, *args, timeout=60):
        return subprocess.run(
            owsync_cmd(*args, "--control-socket", str(self.sock)),
            env=base_env(None),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict:
        r = self.ctl("status", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def has(self, rel: str, data: bytes | None = None) -> bool:
        p = self.dir / rel
        try:
            return p.exists() if data is None else p.read_bytes() == data
        except OSError:
            return False


# --- crash points under strace -----------------------------------------------------

STRACED = ("openat,creat,write,pwrite64,writev,rename,renameat,renameat2,unlink,unlinkat,"
           "mkdir,mkdirat,rmdir,fsync,fdatasync,syncfs,sync,fchmod,fchmodat,chmod,"
           "utimensat,truncate,ftruncate,link,linkat,symlink,symlinkat")  # fmt: skip
# the call each operation of a point's name stands for (owsync/io/faults.py)
POINT_CALLS = {
    "create": {"openat", "creat"},
    "write": {"write", "pwrite64", "writev"},
    "fsync": {"fsync", "fdatasync"},
    "fsync_dir": {"fsync"},
    "syncfs": {"syncfs"},
    "rename": {"rename", "renameat", "renameat2"},
    "unlink": {"unlink", "unlinkat"},
    "mkdir": {"mkdir", "mkdirat"},
    "chmod": {"fchmod"},
    "utime": {"utimensat"},
}


def strace_cmd(out: Path) -> list[str]:
    """Prefix a command with strace writing each thread's calls to ``out``.PID."""
    return ["strace", "-f", "-ff", "-qq", "-y", "-s", "120", "-e", f"trace={STRACED}",
            "-o", str(out)]  # fmt: skip


def _call_paths(name: str, args: str) -> list[str]:
    """The paths a traced call acts on (a relative name joined to its directory's)."""
    fds = re.findall(r"<(/[^>]*)>", args)
    on_fd = ("write", "pwrite64", "writev", "fsync", "fdatasync", "syncfs", "fchmod", "ftruncate")
    if fds and (name in on_fd or (name == "utimensat" and not re.search(r'^[^,]*, "', args))):
        return fds[:1]  # (utimensat on a descriptor: no name after it)
    base = fds[0] if fds else ""
    out = []
    for s in re.findall(r'"((?:[^"\\]|\\.)*)"', args):
        out.append(s if s.startswith("/") else f"{base}/{s}")
    return out


def node_files(root: Path, name: str) -> list[str]:
    """What node ``name`` writes in ``root``: its directory and version store
    (each ending in /: all in them), ``root`` itself (the database's entries),
    its database and the files beside it (not the lock: it holds nothing)."""
    db = root / f"{name}.db"
    return [f"{root / name}/", f"{root / name}.versions/", str(root), str(db),
            *(f"{db}.{x}" for x in ("db_tmp", "journal", "corrupt"))]  # fmt: skip


def _within(path: str, area: str) -> bool:
    return path == area or (area.endswith("/") and (path.startswith(area) or path == area[:-1]))


def unpointed_calls(
    out: Path, areas: list[str], trace: Path, silent_ok: frozenset[str] = frozenset()
) -> list[str]:
    """What the strace files ``out``.* show wrong with the crash points: a call
    that changes a file in ``areas`` (each a file, or, ending in /, all in a
    directory) without its point just before (none, or one of another kind, or a
    second call after one point: only makedirs may make several directories);
    a point followed by no call (but those in ``silent_ok``)."""
    trace_s, bad = str(trace), []
    line_re = re.compile(r"^([a-z0-9_]+)\((.*)\)\s+=\s+(-?\d+|\?)")
    for f in sorted(out.parent.glob(out.name + ".*")):
        pending, used = None, 0
        for line in [*f.read_text(errors="replace").splitlines(), "end"]:
            m = line_re.match(line)
            if not m and line != "end":
                continue
            name, args = (m.group(1), m.group(2)) if m else ("end", "")
            paths = _call_paths(name, args)
            if name == "end" or (name == "write" and paths and paths[0] == trace_s):
                if pending is not None and not used and pending not in silent_ok:
                    bad.append(f"{pending}: no call after it")
                hit = re.search(r'"([a-z0-9_.]+)\\n"', args)
                pending, used = (hit.group(1) if hit else None), 0
                continue
            if not any(_within(p, a) for p in paths for a in areas):
                continue
            if name == "openat" and not re.search(r"O_CREAT|O_WRONLY|O_RDWR|O_TRUNC", args):
                continue
            ops = pending.split(".")[1:] if pending else []
            kinds = set().union(*(POINT_CALLS.get(op, set()) for op in ops))
            if name in ("mkdir", "mkdirat") and "EEXIST" in line and name not in kinds:
                continue  # makedirs(exist_ok=True) of a directory there (the lock's): no change
            if pending is None or name not in kinds or (used and name not in ("mkdir", "mkdirat")):
                bad.append(f"after {pending or 'no point'}: {line}")
            used += 1
    return bad


# --- the crash points of the write path ------------------------------------------

# Every crash point (owsync/io/faults.py), with the runs that reach it:
# "session", a node receiving in a session (with syncfs and renameat2, as
# here); "fallback", the same without them (OWSYNC_WITHOUT); "recovery", only
# the run after a crash; "live", a daemon receiving over its live link;
# "live-recovery", only its run after a crash; "race", only when a local write
# races a received file's rename; "corrupt", only with a corrupt database.
CRASH_POINTS: dict[str, str] = {
    # a received file: a temp file beside its target (in a new directory perhaps)
    "syncdir.mkdir": "session fallback live",
    "syncdir.create.temp": "session fallback live",
    "syncdir.write.temp": "session fallback live",
    "syncdir.chmod.temp": "session fallback live",
    "syncdir.utime.temp": "session fallback live",
    # made durable: one syncfs per batch, or an fsync per file
    "syncdir.syncfs.batch": "session live",
    "syncdir.fsync.temp": "fallback",
    # put in place: renameat2, or a plain rename where it is refused
    "syncdir.rename.noreplace": "session fallback live",
    # (a replaced file's temp name first marked with what recovery needs)
    "syncdir.rename.mark": "session live",
    "syncdir.rename.exchange": "session fallback live",
    "syncdir.unlink.replaced": "session live",
    "syncdir.rename.back": "race",
    "syncdir.unlink.temp": "race live-recovery",
    "syncdir.rename": "fallback",
    # a peer's deletion, after its tombstone is saved: the file taken aside,
    # checked again, removed (or put back: a local write since)
    "syncdir.rename.deleted": "session fallback live",
    "syncdir.unlink.deleted": "session fallback live",
    "syncdir.rename.undeleted": "race",
    # the directories' new entries made durable, before the database names them
    "syncdir.syncfs.dirs": "session live",
    "syncdir.fsync.dir": "fallback",
    # temp files an interrupted run left
    "syncdir.unlink.stale": "recovery live-recovery",
    # a local write a kill left under a marked temp name, put back
    "syncdir.rename.recover": "race",
    # the version store: contents, then the index that names them
    "versions.mkdir.store": "session fallback live",
    "versions.mkdir.objects": "session fallback live",
    "versions.create.object": "session fallback live",
    "versions.write.object": "session fallback live",
    "versions.fsync.object": "fallback",
    "versions.rename.object": "session fallback live",
    "versions.syncfs.objects": "session live",
    "versions.fsync_dir.objects": "fallback",
    "versions.create.index": "session fallback live",
    "versions.write.index": "session fallback live",
    "versions.fsync.index": "session fallback live",
    "versions.rename.index": "session fallback live",
    "versions.fsync_dir.index": "session fallback live",
    "versions.unlink.object": "recovery live-recovery race",  # a content no version names
    "versions.unlink.temp": "recovery live-recovery",
    # the database written whole (a session; the daemon now and then)
    "database.create": "session fallback",
    "database.write": "session fallback",
    "database.fsync": "session fallback",
    "database.rename": "session fallback",
    "database.fsync_dir": "session fallback",
    "database.journal.unlink": "session fallback",
    # or its journal appended (the daemon's short steps)
    "database.journal.create": "live",
    "database.journal.write": "live",
    "database.journal.fsync": "live",
    "database.utime": "live",
    # a corrupt database set aside
    "database.rename.corrupt": "corrupt",
    "database.journal.unlink.corrupt": "corrupt",
}


@contextlib.contextmanager
def shm_dir(fallback: Path):
    """A directory for tests that kill nodes over and over: in memory (tmpfs)
    where /dev/shm is there, so that their syncfs and fsync calls cost
    nothing (a killed process loses nothing the page cache holds, so they
    change nothing there), else ``fallback``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    d = Path(tempfile.mkdtemp(prefix="owsync-crash-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def crash_path(tmp_path):
    with shm_dir(tmp_path) as d:
        yield d


def expected_points(run: str) -> set[str]:
    """The crash points CRASH_POINTS says ``run`` reaches."""
    return {p for p, runs in CRASH_POINTS.items() if run in runs.split()}


def crash_cases(hits: list[tuple[str, int]], last_of: tuple[str, ...]) -> list[tuple[str, int]]:
    """The calls to crash at, of those a traced run hit: every one with
    OWSYNC_CRASH_POINTS=all, the one OWSYNC_CRASH_POINT=NAME:N names, else the
    first call of each point and the last of the points named ``last_of*``
    (another moment of the run: the last file, the database saved again)."""
    one = os.environ.get("OWSYNC_CRASH_POINT")
    if one:
        name, _, n = one.rpartition(":")
        return [(name, int(n))]
    if os.environ.get("OWSYNC_CRASH_POINTS") == "all":
        return hits
    last: dict[str, int] = {}
    for name, n in hits:
        last[name] = n
    return [
        (name, n) for name, n in hits if n == 1 or (n == last[name] and name.startswith(last_of))
    ]


def load_db(db: Path) -> dict:
    """A node's records: its database with its journal replayed; raises
    CorruptDatabase where either is malformed (a torn last journal line is
    not: a crash during its write leaves one)."""
    records, _, gen = loads_db_doc(db.read_bytes())
    journal = Path(str(db) + ".journal")
    if journal.exists():
        replay_journal(records, gen, journal.read_bytes())
    return records


def store_versions(root: Path) -> list[dict]:
    """The versions a store's index names, each checked to have its content on disk."""
    index = root / "index.json"
    if not index.exists():
        return []
    versions = json.loads(index.read_bytes())["versions"]
    for v in versions:
        obj = root / "objects" / v["hash"][:2] / v["hash"]
        assert obj.is_file(), f"version {v['id']} of {v['path']}: its content is gone"
        got = hashlib.sha256(obj.read_bytes()).hexdigest()
        assert got == v["hash"], f"version {v['id']}: a torn content"
    return versions


# --- a node killed at a crash point, restarted, checked (test_crash_points,
# test_live_crash) -------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_temp(rel: str) -> bool:
    """Whether ``rel`` names one of owsync's temp files (owsync/io/syncdir.py)."""
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".owsync-") and name.endswith(".tmp")


def put(p: Path, data: bytes, mtime: float | None = None) -> None:
    """Write ``p`` in place (its directories made), with ``mtime`` if given."""
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if mtime is not None:
        os.utime(p, (mtime, mtime))


def copy_any(src: Path, dst: Path) -> None:
    """Copy a file or a directory tree, if there is one."""
    if src.is_dir():
        shutil.copytree(src, dst)
    elif src.exists():
        shutil.copy2(src, dst)


def files_under(top: Path) -> dict[str, bytes]:
    """Every file under ``top`` (temp files too), read while a daemon may change them."""
    out = {}
    for p in sorted(top.rglob("*")):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            out[p.relative_to(top).as_posix()] = p.read_bytes()
    return out


def records_hold(db: Path, files: dict[str, bytes], gone=frozenset()) -> bool:
    """Whether ``db`` (its journal replayed) records ``files`` live and ``gone`` deleted."""
    try:
        records = load_db(db)
    except (FileNotFoundError, ValueError):
        return False
    live = all(p in records and records[p].hash == sha(v) for p, v in files.items())
    return live and all(p in records and records[p].deleted for p in gone)


def allowed_contents(*contents: dict[str, bytes]) -> dict[str, set[str]]:
    """What a node may hold at a crash: path -> the hashes of its contents in any of these."""
    allowed: dict[str, set[str]] = {}
    for files in contents:
        for p, d in files.items():
            allowed.setdefault(p, set()).add(sha(d))
    return allowed


def check_old_or_new(files: dict[str, bytes], allowed: dict[str, set[str]], where="") -> None:
    """Every file but a temp one (beside its target, never in place) holds one of
    the contents ``allowed`` for it, byte for byte."""
    for p, data in files.items():
        if is_temp(p):
            continue
        assert p in allowed, f"unexpected file {p}{where}"
        assert sha(data) in allowed[p], f"{p} is neither old nor new (half-written?)"


def check_last_writes(
    a: dict[str, bytes], b: dict[str, bytes], want: dict[str, bytes], deleted: set[str]
) -> None:
    """Trees ``a`` and ``b`` hold the last write of each path of ``want``: no temp
    file left, none of ``deleted`` back, no newer write lost."""
    temps = [p for p in [*a, *b] if is_temp(p)]
    assert not temps, f"temp files left: {temps}"
    back = sorted(p for p in deleted if p in a or p in b)
    assert not back, f"deleted files came back: {back}"
    lost = sorted(p for p, d in want.items() if a.get(p) != d or b.get(p) != d)
    assert not lost, f"not the last write on both nodes: {lost}"


def check_records(records: dict, want: dict[str, bytes], deleted: set[str]) -> None:
    """B's database records ``want`` live and ``deleted`` deleted."""
    for p, d in want.items():
        r = records[p]
        assert not r.deleted and r.hash == sha(d), f"B's database: {p} is {r}"
    for p in deleted:
        assert records[p].deleted, f"B's database: {p} is {records[p]}"


def check_kept(store: Path, replaced, what: str = "B's") -> None:
    """The version store ``store`` keeps every content of ``replaced``."""
    kept = {v["hash"] for v in store_versions(store)}
    missing = [d for d in replaced if sha(d) not in kept]
    assert not missing, f"{what} version store lost {len(missing)} replaced content(s)"


class SavedState:
    """The files and directories ``names`` of ``work``, copied aside once (to
    ``work``/initial) and put back at the same paths (a database names its
    directory) before each run."""

    def __init__(self, work: Path, names) -> None:
        self.work, self.names = work, list(names)
        self.saved = work / "initial"
        self.saved.mkdir()
        for name in self.names:
            copy_any(work / name, self.saved / name)

    def restore(self) -> None:
        for name in self.names:
            cur = self.work / name
            if cur.is_dir():
                shutil.rmtree(cur)
            elif cur.exists():
                cur.unlink()
            copy_any(self.saved / name, cur)


class CrashRun:
    """B killed at a crash point, checked as the kill left it, written to
    meanwhile, run again, checked converged.  A subclass gives:
    ``killed(name, n)``, B's exit status from a run armed to die at the n-th
    call of point ``name`` (None: the run did not reach it this time);
    ``check_crashed()``, a line on how far B had gone; ``meanwhile()``;
    ``restart(env)``, B's next run armed with ``env``; ``check_final()``."""

    def kill_and_recover(self, name: str, n: int, again_env: dict[str, str]) -> str:
        """The row of this kill: how far B had gone, or that it was not reached."""
        t0 = time.monotonic()
        status = self.killed(name, n)
        if status is None:
            return "not reached this time"
        assert status == -signal.SIGKILL, f"not killed there (exit status {status})"
        state = self.check_crashed()
        self.meanwhile()
        self.restart(again_env)
        self.check_final()
        return f"ok    {time.monotonic() - t0:4.1f} s  {state}"


def kill_each(cases, one, label=None, detail=None, after=None) -> tuple[list[str], list[str]]:
    """``one(case)`` for each case, its row (``label(case)``, a crash point's
    NAME:N by default, and what ``one`` returned, or its first failing line);
    then ``after()`` if given.  Returns the rows and the failures (with
    ``detail()`` if given: the logs)."""
    rows: list[str] = []
    failures: list[str] = []
    for case in cases:
        row = label(case) if label else f"{case[0]}:{case[1]}"
        try:
            rows.append(f"{row:40} {one(case)}")
        except AssertionError as exc:
            first = str(exc).splitlines()[0]
            rows.append(f"{row:40} FAIL  {first}")
            failures.append(f"{row}: {first}" + (detail() if detail else ""))
        finally:
            if after:
                after()
    return rows, failures


class DaemonCrashPair(CrashRun):
    """Daemons A and B in ``work`` (configured by the subclass), B the one killed:
    each run starts from the state ``keep()`` saved, A first."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.a, self.b = DaemonNode(work, "a"), DaemonNode(work, "b")

    def keep(self, names) -> None:
        self.state = SavedState(self.work, names)

    def reset(self) -> None:
        self.state.restore()
        for d in (self.a, self.b):
            d.log.write_text("")

    def run_b(self, env: dict[str, str], cmd=None) -> None:
        self.b.start(cmd=cmd, env=base_env(None) | env, probe=False)

    def stop(self) -> None:
        """Stop both at once (each notices SIGTERM within half a second)."""
        for d in (self.a, self.b):
            if d.proc is not None and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)  # our own child, by its PID
        self.b.stop()
        self.a.stop()

    def traced_run(self, trace: Path) -> None:
        """Both from the saved state, B traced, until ``check_synced()`` holds."""
        self.reset()
        self.a.start()
        self.run_b(armed(trace=trace))
        self.check_synced()
        self.stop()

    def killed(self, name: str, n: int) -> int | None:
        self.reset()
        self.a.start()
        self.run_b(armed(crash_at=(name, n)))
        wait_for(lambda: self.b.proc.poll() is not None or self.in_sync(), 20)
        status = self.b.stop()  # alive: it ends its step first, killed there if the point comes
        # a later call, or a point reached now and then: not reached this time
        return None if status == 0 and self.not_always(name, n) else status

    def restart(self, env: dict[str, str]) -> None:
        self.run_b(env)

    def plan_meanwhile(self, synced: dict[str, bytes], edit: str, remove: str) -> None:
        """The writes made after a crash, while B is down, each of which must
        win: A re-creates gone1 and edits new0; B edits ``edit``, re-creates
        gone0 (still there, or deleted already) and deletes ``remove``.  Sets
        ``final``, what both hold after, from ``synced``, and ``deleted``."""
        self.final = synced | {
            "gone1": b"re-created on a after the crash\n",
            "new0": b"edited on a after the crash\n",
            edit: b"edited on b after the crash\n",
            "gone0": b"re-created on b after the crash\n",
        }
        del self.final[remove]
        self.deleted = {remove}
        self._edit, self._remove = edit, remove

    def write_meanwhile(self, a_dir: Path, b_dir: Path) -> None:
        """The writes plan_meanwhile() planned, in A's ``a_dir`` and B's ``b_dir``."""
        for d, name in ((a_dir, "gone1"), (a_dir, "new0"), (b_dir, self._edit), (b_dir, "gone0")):
            put(d / name, self.final[name])
        (b_dir / self._remove).unlink()


C_BIN = os.environ.get("OWSYNC_C_BIN", "")


def c_bin() -> str | None:
    """The owsync 1.2.0 binary named by OWSYNC_C_BIN, if it can run."""
    return C_BIN if C_BIN and os.access(C_BIN, os.X_OK) else None


class CDaemonNode(DaemonFiles):
    """One owsync 1.2.0 `daemon` (OWSYNC_C_BIN), as DaemonNode runs ours.

    1.2.0 reaches every peer on its own ``port`` (``peer=`` takes an address
    only), so the nodes of a mesh with it listen on addresses of their own and
    one common port.  Its database is JSON: ``{"files": {path: record}}``."""

    c = True

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def configure(self, peers, poll=30) -> CDaemonNode:
        """``peers``: addresses (1.2.0 adds its own port to each)."""
        self.write_conf(peers, f"poll_interval={poll}")
        return self

    def start(self, env: dict | None = None, **_) -> CDaemonNode:
        env = {k: v for k, v in (env or os.environ).items() if k not in INHERITED_NOT}
        assert C_BIN, "OWSYNC_C_BIN is not set"
        self.spawn([C_BIN, "daemon", "-f", "-c", str(self.conf)], env, self.log)
        assert wait_for(lambda: listening_on(self.host, self.port) or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.text()
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def records(self) -> dict:
        """Its database as saved (replaced atomically): path -> the JSON record."""
        try:
            return json.loads(self.db.read_text())["files"]
        except (FileNotFoundError, ValueError, KeyError):
            return {}


# =====================================================================================
# Helpers shared between test files: tests import them from here, never from one
# another (tests/test_test_layout.py checks it).  Kept as one block to ease merges.
# =====================================================================================


# --- scripted peers and what they send (test_hostile, test_net_faults) ----------


class Hostile:
    """A scripted v1 peer, encrypted with KEY, connected to a listener on ``port``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.cipher = AesGcmCipher(bytes.fromhex(KEY))
        self.dec = protocol.FrameDecoder()
        self.inbox: list[protocol.Message] = []

    def send(self, msg: protocol.Message) -> None:
        payload = b"".join(self.cipher.seal_parts(protocol.encode_parts(msg)))
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def recv(self) -> protocol.Message:
        while not self.inbox:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.inbox += [protocol.decode(self.cipher.open(f)) for f in self.dec.feed(data)]
        return self.inbox.pop(0)

    def recv_until_closed(self) -> list[protocol.Message]:
        out = []
        try:
            while True:
                out.append(self.recv())
        except (ConnectionError, OSError):
            pass
        return out

    def handshake(self, files=()) -> protocol.RequestFiles:
        self.send(protocol.Hello("hostile", time.time()))
        assert isinstance(self.recv(), protocol.Hello)
        assert isinstance(self.recv(), protocol.SyncState)
        self.send(protocol.SyncState(tuple(files)))
        req = self.recv()
        assert isinstance(req, protocol.RequestFiles)
        return req

    def close(self) -> None:
        self.sock.close()


def rec(path: str, data: bytes = b"x", mtime: int | None = None, deleted=False) -> Record:
    """A record of ``data`` at ``path``, an hour ahead of now unless ``mtime`` is given."""
    mtime = mtime or int((time.time() + 3600) * 1000)
    if deleted:
        return Record(path, None, mtime, 0, 0o644, True)
    return Record(path, hashlib.sha256(data).hexdigest(), mtime, len(data), 0o644, False)


class Relay(threading.Thread):
    """Accepts one connection and forwards it to ``port``, applying ``fault`` to the
    client-to-server bytes: ("cut", n) closes both ends after n bytes, ("truncate", n)
    forwards n bytes then half-closes, ("delay", s) sleeps s before each chunk,
    ("swap", n) swaps the two chunks after the first n bytes, ("flip", n) flips one
    bit at byte n, ("none", 0) forwards it as it is.  ``client_bytes`` holds all the
    client sent (the replay test records a session with it)."""

    def __init__(self, port: int, fault: tuple[str, float]) -> None:
        super().__init__(daemon=True)
        self.target, self.fault = port, fault
        self.client_bytes = bytearray()
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.start()

    def run(self) -> None:
        client, _ = self.srv.accept()
        server = socket.create_connection(("127.0.0.1", self.target))
        back = threading.Thread(target=self._pipe, args=(server, client, None), daemon=True)
        back.start()
        self._pipe(client, server, self.fault)
        back.join(5)
        for s in (client, server, self.srv):
            s.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, fault) -> None:
        record = fault is not None  # the client-to-server direction
        kind, arg = fault or ("none", 0)
        seen, held = 0, None
        try:
            while data := src.recv(4096):
                if record:
                    self.client_bytes += data
                if kind == "delay":
                    threading.Event().wait(arg)
                if kind in ("cut", "truncate") and seen + len(data) > arg:
                    dst.sendall(data[: int(arg) - seen])
                    if kind == "cut":  # both ends see the connection end (FIN), at once
                        for s in (src, dst):
                            s.shutdown(socket.SHUT_RDWR)
                    else:
                        dst.shutdown(socket.SHUT_WR)
                    return
                if kind == "flip" and seen <= arg < seen + len(data):
                    i = int(arg) - seen
                    data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
                if kind == "swap" and seen >= arg and held is None:
                    held, seen = data, seen + len(data)
                    continue
                dst.sendall(data)
                if held is not None:
                    dst.sendall(held)
                    held, kind = None, "none"
                seen += len(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


# --- what a hostile peer must leave intact: canary tree, peak RSS, serving on ---


MiB = 1024 * 1024


BOUND = 64 * MiB  # RSS growth allowed for anything that is not a frame near the limit


def tree_digest(top: Path) -> str:
    """Names, types, modes, mtimes, contents and link targets of everything under ``top``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, top)}\0{st.st_mode:o}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            elif stat.S_ISREG(st.st_mode):
                h.update(f"{st.st_mtime_ns}\0".encode())
                h.update(Path(p).read_bytes())
            h.update(b"\0")
    return h.hexdigest()


class Canary:
    """A tree outside every sync root; each node under test links to it from inside."""

    def __init__(self, top: Path) -> None:
        self.dir = top
        top.mkdir()
        (top / "victim").write_text("must survive")
        (top / "deep").mkdir()
        (top / "deep" / "secret").write_text("do not leak")
        (top / "deep" / "secret").chmod(0o600)
        self.digest = tree_digest(top)

    def link_from(self, node: Node, name: str = "linkdir") -> None:
        os.symlink(self.dir, node.dir / name)

    def assert_unchanged(self) -> None:
        assert tree_digest(self.dir) == self.digest, sorted(os.listdir(self.dir))


def mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Peak:
    """Peak RSS growth of a running process over a stretch of the test.

    Writing 5 to /proc/PID/clear_refs resets VmHWM to the current RSS (Linux 4.0+),
    so the high-water mark read afterwards is the peak of this stretch alone.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass  # then the peak may include an earlier one: only more conservative
        self.before = mem(pid)["VmRSS"]

    def growth(self) -> int:
        return mem(self.pid)["VmHWM"] - self.before

    def check(self, what: str, bound: int = BOUND, exc=AssertionError) -> int:
        g = self.growth()
        print(f"\n[peak RSS] {what}: +{g / MiB:.1f} MiB over {self.before / MiB:.1f} MiB")
        if g >= bound:
            raise exc(f"{what}: RSS grew by {g / MiB:.1f} MiB (bound {bound / MiB:.0f} MiB)")
        return g


def make_target(nodes, canary: Canary, name: str = "a", mode: str = "encrypted", **kw) -> Node:
    """A listening node with sub/keep, and linkdir -> the canary."""
    plain = mode == "plain"
    n = nodes(name, key=None if plain else KEY, extra=["-p"] if plain else [], **kw)
    n.write("sub/keep", "k")
    canary.link_from(n)
    n.plain = plain
    return n


def still_serves(node: Node, nodes, name: str) -> Node:
    """A real `owsync connect` from a fresh node syncs with ``node``: it gets a file
    written just before, and ``node`` gets one from it."""
    checker = nodes(name, key=node.key, extra=["-p"] if node.key is None else [])
    node.write(f"probe-{name}", name)
    checker.write(f"from-{name}", name)
    r = checker.connect(node, timeout=30)
    assert r.returncode == 0, r.stderr
    assert node.proc.poll() is None
    assert checker.files()[f"probe-{name}"] == name.encode()
    assert (node.dir / f"from-{name}").read_text() == name
    return checker


def session_line(node: Node, label: str, since: int = 0, timeout: float = 10.0) -> str:
    """The listener's one line on how the session with ``label`` ended."""
    key = f"sync with {label} "
    log = node.wait_log(key, timeout)[since:]
    lines = [line for line in log.splitlines() if key in line]
    assert lines, log[-2000:]
    assert "Traceback" not in log, log
    return lines[-1]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".owsync-")]


def record_session(a: Node, b: Node) -> bytes:
    relay = Relay(a.port, ("none", 0))  # records what the connect sends
    r = b.run("connect", f"127.0.0.1:{relay.port}", *b.opts())
    assert r.returncode == 0, r.stderr
    relay.join(10)
    return bytes(relay.client_bytes)


# --- OpenWrt's real components on the test's own bus (OWSYNC_UBUSD ...) ---------


ENV = {k: os.environ.get(f"OWSYNC_{k}", "") for k in ("UBUSD", "UBUS", "UCI", "PROCD")}


BINDINGS = os.environ.get("OWSYNC_PYBINDINGS", "")


def need(*names: str) -> None:
    missing = [f"OWSYNC_{n}" for n in names if not os.access(ENV[n], os.X_OK)]
    if not (BINDINGS and Path(BINDINGS).is_dir()):
        missing.append("OWSYNC_PYBINDINGS")
    if missing:
        pytest.skip(f"needs OpenWrt's components: set {', '.join(missing)} (see README)")


def bindings_env() -> dict:
    env = base_env(None)
    env["PYTHONPATH"] = BINDINGS + os.pathsep + env["PYTHONPATH"]
    return env


class Bus:
    """A real ubusd on a socket of the test's own."""

    def __init__(self, tmp: Path) -> None:
        self.sock = tmp / "ubus.sock"
        self.procs: list[subprocess.Popen] = []
        self.start()

    def start(self) -> None:
        p = subprocess.Popen([ENV["UBUSD"], "-s", str(self.sock)], stderr=subprocess.DEVNULL)
        self.procs.append(p)
        self.ubusd = p
        assert wait_for(lambda: self.sock.exists(), 5)

    def kill_ubusd(self) -> None:
        self.ubusd.terminate()  # by PID: our own child
        self.ubusd.wait(5)
        self.sock.unlink(missing_ok=True)

    def spawn(self, args, **kw) -> subprocess.Popen:
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def ubus(self, *args: str, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run([ENV["UBUS"], "-s", str(self.sock), *args],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def call(self, obj: str, method: str, data: dict | None = None) -> dict:
        args = ["call", obj, method] + ([json.dumps(data)] if data is not None else [])
        r = self.ubus(*args)
        assert r.returncode == 0, (r.stdout, r.stderr)
        return json.loads(r.stdout or "{}")

    def has(self, obj: str) -> bool:
        return obj in self.ubus("list").stdout.split()

    def start_procd(self, tmp: Path) -> None:
        """The real procd, as an ordinary process serving `service` on this bus."""
        init_d, rc_d = tmp / "init.d", tmp / "rc.d"
        init_d.mkdir()
        rc_d.mkdir()
        self.spawn([ENV["PROCD"], "-s", str(self.sock), "-I", str(init_d), "-R", str(rc_d)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        assert wait_for(lambda: self.has("service"), 10)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# --- LuCI's real runtime in an OpenWrt chroot (OWSYNC_LUCI_ROOT) ----------------


LUCI_ENV = "OWSYNC_LUCI_ROOT"


LUCI_NEEDED = ("usr/bin/uhttpd", "usr/sbin/rpcd", "usr/bin/ucode", "usr/lib/ucode/luci/core.so",
               "usr/share/ucode/luci/uhttpd.uc", "www/luci-static/resources/luci.js",
               "www/luci-static/bootstrap/cascade.css")  # fmt: skip


PASSWORD = "owsync-test"


def _skip() -> str | None:
    base = skip_reason()
    if base:
        return base
    root = os.environ.get(LUCI_ENV, "")
    if not root:
        return f"set {LUCI_ENV} to LuCI's runtime tree (uhttpd, rpcd, ucode, luci-base; README)"
    missing = [p for p in LUCI_NEEDED if not os.path.exists(os.path.join(root, p))]
    if missing:
        return f"{LUCI_ENV}={root} lacks {', '.join(missing)}"
    if chromium_path() is None or not shutil.which("openssl"):
        return "needs Debian's chromium and openssl"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs playwright (pip install -e '.[test]')"
    return None


def crypt(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-1", password], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


class Router:
    def __init__(self, tmp: Path, packages: Path | None = None, fmt: str = "ipk") -> None:
        """LuCI's runtime with luci-app-owsync and owsync in it: this checkout's
        files (``make install``), or, given ``packages`` (scripts/build-packages.sh's
        output), the packages installed by ``fmt``'s package manager (opkg for
        ``ipk``, apk for ``apk``) before rpcd and uhttpd start, as on a router."""
        self.http = free_port()
        self.port, self.peer_port, self.peer2_port = free_port(), free_port(), free_port()
        self.peer = f"127.0.0.1:{self.peer_port}"
        self.packages = packages
        self.r = OpenWrtRoot(tmp, trees=[os.environ[LUCI_ENV]], net=False, prepare=self.prepare,
                             owsync=packages is None)  # fmt: skip
        if packages is not None:
            for command in PKG_INSTALL[fmt]:
                self.r.ok(f"{PKG_TOOL[fmt]} {command}", timeout=300)
            self.r.ok("/start.local")

    def prepare(self, staging: Path) -> None:
        if self.packages is None:
            r = subprocess.run(["make", "-s", "install", f"DESTDIR={staging}", "PREFIX=/usr",
                                f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True,
                               text=True, timeout=300)  # fmt: skip
            assert r.returncode == 0, r.stderr
            # a router's /usr/bin/python3 has owsync installed; here it is this interpreter
            (staging / "usr/bin/python3").unlink(missing_ok=True)
            (staging / "usr/bin/python3").symlink_to(sys.executable)
        else:
            stage_package_tools(staging, self.packages)
        pw = crypt(PASSWORD)
        (staging / "etc/config/rpcd").write_text(
            f"config login\n\toption username 'root'\n\toption password '{pw}'\n"
            "\tlist read '*'\n\tlist write '*'\n\n"
            # what any LuCI login needs (LuCI takes a refused `uci luci` read for an expired
            # session), and of owsync the read grant alone; no write grant at all
            f"config login\n\toption username 'viewer'\n\toption password '{pw}'\n"
            "\tlist read 'unauthenticated'\n\tlist read 'luci-base'\n"
            "\tlist read 'luci-base-network-status'\n\tlist read 'luci-app-owsync'\n"
        )
        (staging / "etc/owsync").mkdir(exist_ok=True)
        (staging / "etc/owsync/key").write_text(KEY + "\n")
        (staging / "etc/owsync/key").chmod(0o600)
        # from the checkout, rpcd's plugins find owsync and the bindings through
        # PYTHONPATH; installed, through OpenWrt's site-packages (stage_package_tools)
        bindings = os.environ["OWSYNC_PYBINDINGS"]
        pypath = f"PYTHONPATH={bindings}:{REPO} " if self.packages is None else ""
        # at boot from the checkout; once the package manager is done, installed
        boot = staging / ("boot.local" if self.packages is None else "start.local")
        boot.write_text(f"""#!/bin/sh
uci set owsync.main.enabled=1
uci set owsync.main.host=127.0.0.1
uci set owsync.main.port={self.port}
uci set owsync.main.poll_interval=600
uci add_list owsync.main.peer={self.peer}
uci commit owsync
mkdir -p /srv/peer /srv/peer2
echo 'config dnsmasq' > /srv/peer/dhcp
for p in {self.peer_port}:/srv/peer {self.peer2_port}:/srv/peer2; do
    (OWSYNC_KEY={KEY} owsync listen -H 127.0.0.1 -P ${{p%%:*}} -d ${{p#*:}} \\
        -b ${{p#*:}}.db -i '*' </dev/null >${{p#*:}}.log 2>&1 &)
done
{pypath}/usr/sbin/rpcd </dev/null >/tmp/rpcd.log 2>&1 &
while ! ubus -t 1 wait_for session; do sleep 0.1; done
/usr/bin/uhttpd -f -n 1 -p 127.0.0.1:{self.http} -h /www -x /cgi-bin -u /ubus -o /cgi-bin/luci \\
    -O /usr/share/ucode/luci/uhttpd.uc </dev/null >/tmp/uhttpd.log 2>&1 &
/etc/init.d/owsync enable
/etc/init.d/owsync start
""")
        boot.chmod(0o755)

    def status(self) -> dict | None:
        res = self.r.sh("ubus call owsync status")
        return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None

    def ready(self) -> None:
        """Once the daemon has synced with its peer (the first check of every LuCI test)."""
        assert wait_for(lambda: (self.status() or {}).get("peers"), 30), self.r.sh(
            "/sbin/logread"
        ).stdout
        assert wait_for(lambda: self.status()["peers"][0].get("last_result") == "ok", 20)


class Session:
    """One browser context logged in as ``user``, recording what it received."""

    def __init__(self, browser, router: Router, user: str) -> None:
        self.base = f"http://127.0.0.1:{router.http}/cgi-bin/luci"
        self.shots = router.r.base / "screenshots"
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.bodies: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e} {e.stack}"))
        self.page.on("response", self._response)
        self.page.goto(self.base + "/")
        self.page.fill("input[name=luci_username]", user)
        self.page.fill("input[name=luci_password]", PASSWORD)
        self.page.press("input[name=luci_password]", "Enter")
        self.page.wait_for_load_state("networkidle")

    def _console(self, msg) -> None:
        # LuCI answers the page before login with 403, which Chromium logs: not a failure
        if msg.type == "error" and "403" not in msg.text:
            self.errors.append(msg.text)

    def _response(self, resp) -> None:
        with contextlib.suppress(Exception):  # redirects and aborted requests have no body
            self.bodies.append(resp.text())

    def open(self, path: str) -> None:
        self.page.goto(f"{self.base}/admin/services/owsync/{path}")
        self.page.wait_for_load_state("networkidle")

    def screenshot(self, name: str) -> None:
        out = Path(os.environ.get("OWSYNC_SCREENSHOTS") or self.shots)
        out.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(out / f"luci-{name}.png"), full_page=True)


# --- UCI files and the browser, for LuCI's tests -------------------------------


def read_uci(path: Path) -> dict[str, dict]:
    """The sections of a UCI file, as pyuci's get_all gives them (test helper).

    Enough of the format for our own default file: config/option/list lines,
    quoted values, comments.
    """
    sections: dict[str, dict] = {}
    current = None
    for raw in path.read_text().splitlines():
        words = shlex.split(raw, comments=True)
        if not words:
            continue
        if words[0] == "config":
            current = sections.setdefault(words[2], {".type": words[1]})
        elif words[0] == "option":
            current[words[1]] = words[2]
        elif words[0] == "list":
            current[words[1]] = (*current.get(words[1], ()), words[2])
        else:
            raise ValueError(f"unexpected UCI line: {raw!r}")
    return sections


def chromium_path() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(p, os.X_OK):
            return p
    return None


# --- sync groups (test_groups) -----------------------------------------------------


class GroupDaemonNode(DaemonNode):
    """A DaemonNode laid out as a router: ``etc`` (an /etc), main's directory
    ``etc/config`` inside it, and ``keys`` (a dropbear-like key directory)
    beside it.  ``groups``: name -> (dir, include patterns)."""

    def __init__(self, root: Path, name: str, host="127.0.0.1", port: int | None = None) -> None:
        super().__init__(root, name, host)
        self.dir.rmdir()
        self.etc = root / f"{name}-etc"
        self.dir = self.etc / "config"
        self.dir.mkdir(parents=True)
        self.keys = root / f"{name}-keys"
        self.keys.mkdir()
        if port is not None:
            self.port = port

    def set_groups(self, groups: dict[str, tuple]) -> None:
        """Rewrite its key=value file with these groups (group.NAME.OPTION=VALUE):
        name -> (dir, include patterns[, more: {"restart": [...], "enabled": False}])."""
        lines = []
        for name, g in groups.items():
            more = g[2] if len(g) > 2 else {}
            lines.append(f"group.{name}.dir={g[0]}")
            lines += [f"group.{name}.include={p}" for p in g[1]]
            for option, value in more.items():
                values = value if isinstance(value, list) else [int(value)]
                lines += [f"group.{name}.{option}={v}" for v in values]
        super().configure(self._peers, self._poll, self._extra + "\n".join(lines) + "\n")

    def standard_groups(self) -> dict[str, tuple]:
        return {"dropbear": (self.keys, ["*"]),
                "passwd": (self.etc, ["passwd", "shadow", "group"])}  # fmt: skip

    def configure(self, peers, poll=60, extra="", groups=None) -> GroupDaemonNode:
        self._peers, self._poll, self._extra = peers, poll, extra
        self.set_groups(self.standard_groups() if groups is None else groups)
        return self

    def group(self, name: str) -> dict:
        """The group's row in the status."""
        return next(g for g in self.status()["groups"] if g["name"] == name)

    def errors(self) -> list[str]:
        """Its error lines, but for a peer not listening (started later, stopped)."""
        return [line for line in self.text().splitlines()
                if line.startswith("owsync: error:") and "cannot connect" not in line]  # fmt: skip


def group_conf(name: str, d: Path, include: tuple[str, ...] = ("*",)) -> str:
    """The key=value lines that give a DaemonNode the sync group NAME on ``d``
    (its ``configure(extra=...)``)."""
    return f"group.{name}.dir={d}\n" + "".join(f"group.{name}.include={p}\n" for p in include)


def group_db(db: Path, name: str) -> Path:
    """Group NAME's database beside main's ``db`` (Config.group_database)."""
    return Path(f"{str(db).removesuffix('.db')}.{name}.db")


def group_versions(db: Path, name: str) -> Path:
    """Group NAME's version store beside main's database ``db`` (Config.group_versions_path)."""
    return Path(f"{str(db).removesuffix('.db')}.{name}.versions")


def write_at(path: Path, data: bytes, mtime: float | None = None, mode: int | None = None) -> None:
    """Write a file as an admin would (a temp file renamed over it), with a mode and an mtime."""
    tmp = path.parent.parent / f".{path.name}.new"  # outside the directory it lands in
    tmp.write_bytes(data)
    if mode is not None:
        tmp.chmod(mode)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    tmp.rename(path)


# --- owsync's init script on an OpenWrt root: the checkout's or the package's ---

INIT_PEER_PORT = 4400  # inside the root's own network namespace: nothing else is there
INIT_PEER2_PORT = 4401


def owrt_instances(r: OpenWrtRoot) -> dict:
    listed = json.loads(r.ok('ubus call service list \'{"name":"owsync"}\'') or "{}")
    return listed.get("owsync", {}).get("instances", {})


def owrt_running_pid(r: OpenWrtRoot) -> int | None:
    running = [i["pid"] for i in owrt_instances(r).values() if i.get("running")]
    assert len(running) <= 1, running
    return running[0] if running else None


def owrt_status(r: OpenWrtRoot) -> dict | None:
    res = r.sh("ubus call owsync status")
    return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None


def owrt_logread(r: OpenWrtRoot) -> str:
    """OpenWrt's logread by its path: busybox has an applet of the same name."""
    return r.ok("/sbin/logread")


def owrt_reloads(r: OpenWrtRoot) -> int:
    return owrt_logread(r).count("configuration reloaded")


def owrt_daemons(r: OpenWrtRoot) -> list[str]:
    """Command lines of owsync daemons running in the router (not the stand-in peers):
    ``python -m owsync daemon`` from a checkout, ``python3 /usr/bin/owsync daemon``
    from the package."""
    out = r.ok("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null; echo; done")
    return [line for line in out.splitlines() if re.search(r"(^|[ /])owsync daemon( |$)", line)]


def initscript_admins_day(r: OpenWrtRoot) -> None:
    """The admin's day with owsync's init script, step by step as typed on a router
    (tests/test_initscript_real.py on the checkout, tests/test_packages_real.py on
    the installed package): ``r`` has the init script, the shipped
    /etc/config/owsync (seen by a reload_config already, as at boot) and an
    ``owsync`` command."""
    # 1. enable, then start with the shipped config (enabled=0): nothing runs, exit 0
    r.ok("/etc/init.d/owsync enable")
    assert r.ok("ls /etc/rc.d").split() == ["K10owsync", "S95owsync"]
    for action in ("start", "reload"):  # reload: what LuCI's Save & Apply runs
        res = r.sh(f"/etc/init.d/owsync {action}")
        assert res.returncode == 0 and res.stderr == "", (action, res.stderr)
    assert owrt_instances(r) == {}

    # 2. enabled=1 without key or peer: the script says what to do, no instance
    r.ok("uci set owsync.main.enabled=1; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    assert "no encryption key" in res.stderr and "owsync genkey" in res.stderr, res.stderr
    assert owrt_instances(r) == {}
    # a key now, the README's way (the group's key here, not a new one); still no peer
    r.ok(f"mkdir -p /etc/owsync; (umask 077; printf '%s\\n' {KEY} > /etc/owsync/key)")
    res = r.sh("/etc/init.d/owsync restart")
    assert "no peer" in res.stderr and "uci add_list owsync.main.peer" in res.stderr
    assert owrt_instances(r) == {}

    # the other router: a plain listener on loopback, with the same key
    r.ok("mkdir -p /srv/peer /srv/peer2 && echo 'config dnsmasq' > /srv/peer/dhcp")
    for port, d in ((INIT_PEER_PORT, "/srv/peer"), (INIT_PEER2_PORT, "/srv/peer2")):
        r.ok(
            f"(OWSYNC_KEY={KEY} owsync listen -H 127.0.0.1 -P {port} -d {d}"
            f" -b {d}.db -i '*' </dev/null >{d}.log 2>&1 &)"
        )

    # 3. key and peer, start: one running instance, the expected command, ubus answers
    r.ok(f"uci add_list owsync.main.peer=127.0.0.1:{INIT_PEER_PORT}; uci commit owsync")
    r.ok("/etc/init.d/owsync start")
    assert wait_for(lambda: owrt_running_pid(r) is not None), owrt_logread(r)
    inst = owrt_instances(r)
    assert [i["command"] for i in inst.values()] == [["/usr/bin/owsync", "daemon"]]
    # procd waits as long as the daemon's slowest stop before a SIGKILL (5 s by default)
    assert [i["term_timeout"] for i in inst.values()] == [15]
    assert wait_for(lambda: owrt_status(r) is not None, 20), owrt_logread(r)
    st = owrt_status(r)
    assert st["pid"] == owrt_running_pid(r) and st["encryption"] is True
    assert st["key"] == {"set": True, "fingerprint": fingerprint(bytes.fromhex(KEY))}
    assert [p["address"] for p in st["peers"]] == [f"127.0.0.1:{INIT_PEER_PORT}"]

    # 4. `ubus call owsync sync`, as typed: accepted, a sync starts, the peer's dhcp arrives
    assert json.loads(r.ok("ubus call owsync sync")) == {"started": [f"127.0.0.1:{INIT_PEER_PORT}"]}
    assert wait_for(lambda: r.sh("cat /etc/config/dhcp").stdout == "config dnsmasq\n", 15)

    # 5. add a peer, commit, reload (and reload_config): same PID, the new peer in status
    pid = owrt_running_pid(r)
    r.ok(f"uci add_list owsync.main.peer=127.0.0.1:{INIT_PEER2_PORT}; uci commit owsync")
    r.ok("service owsync reload")
    assert wait_for(lambda: len((owrt_status(r) or {}).get("peers", [])) == 2), owrt_logread(r)
    assert owrt_running_pid(r) == pid
    assert wait_for(lambda: owrt_reloads(r) == 1)
    r.ok("uci set owsync.main.poll_interval=30; uci commit owsync; reload_config")
    assert wait_for(lambda: owrt_reloads(r) == 2), owrt_logread(r)
    assert owrt_running_pid(r) == pid

    # a warning reads as a warning, once, with one prefix: an option owsync does not know
    r.ok("uci set owsync.main.bogus=1; uci commit owsync; service owsync reload")
    warned = r"daemon\.warn owsync\[\d+\]: owsync\.main\.bogus: unknown option ignored$"
    assert wait_for(lambda: re.search(warned, owrt_logread(r), re.M)), owrt_logread(r)
    assert wait_for(lambda: owrt_reloads(r) == 3)
    time.sleep(1)  # room for a second copy (procd's stderr capture) to show up
    assert len([ln for ln in owrt_logread(r).splitlines() if "bogus" in ln]) == 1, owrt_logread(r)
    r.ok("uci delete owsync.main.bogus; uci commit owsync; service owsync reload")
    assert wait_for(lambda: owrt_reloads(r) == 4)

    # the key set the old way, as typed on a router (uci commit notifies no one:
    # reload_config does): the daemon moves it into the root-only key file, and
    # commits nothing else: a change the admin staged meanwhile stays staged
    r.ok("uci set owsync.main.key=$(owsync genkey); uci commit owsync")
    r.ok("uci set owsync.main.poll_interval=45")  # staged, not applied
    committed = r.ok("cat /etc/config/owsync")
    r.ok("reload_config")
    assert wait_for(lambda: r.sh("uci -q get owsync.main.key").returncode != 0, 15), owrt_logread(r)
    assert r.ok("uci changes owsync").strip() == "owsync.main.poll_interval='45'"
    assert r.ok("cat /etc/config/owsync") == re.sub(r"\toption key '[0-9a-f]{64}'\n", "",
                                                     committed)  # fmt: skip
    r.ok("uci revert owsync")
    new_key = r.ok("cat /etc/owsync/key")
    assert re.fullmatch(r"[0-9a-f]{64}\n", new_key) and new_key.strip() != KEY, new_key
    new_key = new_key.strip()
    assert r.ok("stat -c %a /etc/owsync/key").strip() == "600"
    assert "owsync.main.key=" not in r.ok("uci show owsync")
    assert new_key not in r.ok("cat /etc/config/owsync")
    assert r.ok("ls /etc/owsync").split().count("key") == 1  # no temp file left
    expected = fingerprint(bytes.fromhex(new_key))
    assert wait_for(lambda: (owrt_status(r) or {}).get("key", {}).get("fingerprint") == expected)
    assert owrt_status(r)["encryption"] is True and owrt_running_pid(r) == pid
    assert re.search(r"daemon\.info owsync\[\d+\]: the key moved from UCI to /etc/owsync/key$",
                     owrt_logread(r), re.M)  # fmt: skip
    assert new_key not in owrt_logread(r)

    # a key that is not 64 hex characters stays in UCI: refused, the key file untouched
    r.ok("uci set owsync.main.key=not-a-key; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    assert "owsync.main.key=not-a-key validates as" in res.stderr, res.stderr
    assert wait_for(lambda: owrt_running_pid(r) is None)
    assert r.ok("cat /etc/owsync/key").strip() == new_key
    # back to the group's key, the README's way
    r.ok("uci delete owsync.main.key; uci commit owsync")
    r.ok(f"printf '%s\\n' {KEY} > /etc/owsync/key; /etc/init.d/owsync start")
    assert wait_for(lambda: owrt_running_pid(r) is not None)
    group = fingerprint(bytes.fromhex(KEY))
    assert wait_for(lambda: (owrt_status(r) or {}).get("key", {}).get("fingerprint") == group, 20)

    # 6. an invalid value: restart reports the validation error, no broken instance runs
    r.ok("uci set owsync.main.port=notaport; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    port_type = "and(uinteger,range(1,65535))"  # the schema's, verbatim in the init script
    assert f"owsync.main.port=notaport validates as {port_type} with false" in res.stderr
    assert "invalid configuration" in res.stderr
    assert wait_for(lambda: owrt_running_pid(r) is None)
    r.ok("uci set owsync.main.port=4321; uci commit owsync; /etc/init.d/owsync start")
    assert wait_for(lambda: owrt_running_pid(r) is not None)

    # 7. kill -9: procd respawns it
    victim = owrt_running_pid(r)
    assert wait_for(lambda: owrt_status(r) is not None, 20)
    killed = time.monotonic()
    r.ok(f"kill -9 {victim}")
    assert wait_for(lambda: owrt_running_pid(r) not in (None, victim), 20, 0.1), owrt_logread(r)
    assert 3 < time.monotonic() - killed < 15  # respawn's timeout: 5 s
    assert wait_for(lambda: owrt_status(r) is not None, 20)

    # the log as logread shows it: info as info, warnings as warnings, once, one prefix
    log = owrt_logread(r)
    lines = [ln for ln in log.splitlines() if "owsync[" in ln]
    assert any(re.search(r"daemon\.info owsync\[\d+\]: sync with 127\.0\.0\.1", ln) for ln in lines)
    assert not any(re.search(r"owsync\[\d+\]: owsync:", ln) for ln in lines), log
    assert not any("daemon.err" in ln and "sync with" in ln and " ok" in ln for ln in lines)
    started = [ln for ln in lines if "daemon: /etc/config, listening" in ln]
    assert len(started) == len({re.search(r"owsync\[(\d+)\]", ln).group(1) for ln in started})
    assert any("daemon.info" in ln and "moved from UCI" in ln for ln in log.splitlines())
    # nothing doubled by procd's capture of stderr: each message with one priority
    levels: dict[str, set[str]] = {}
    for prio, msg in re.findall(r"daemon\.(\w+) owsync\[\d+\]: (.*)", log):
        levels.setdefault(msg, set()).add(prio)
    assert levels and all(len(p) == 1 for p in levels.values()), levels

    # a crash before the daemon's logging starts (a module missing on the router)
    # still reaches logread: procd captures stderr, as daemon.err
    r.ok("cp /usr/bin/owsync /tmp/owsync.wrapper")
    r.ok(f"printf '#!/bin/sh\\nexec {sys.executable} -c \"import owsync_not_installed\"\\n'"
         " > /usr/bin/owsync; /etc/init.d/owsync restart")  # fmt: skip
    crashed = (
        r"daemon\.err owsync\[\d+\]: ModuleNotFoundError: No module named 'owsync_not_installed'"
    )
    assert wait_for(lambda: re.search(crashed, owrt_logread(r)), 15), owrt_logread(r)
    r.ok("cp /tmp/owsync.wrapper /usr/bin/owsync; /etc/init.d/owsync restart")
    assert wait_for(lambda: owrt_status(r) is not None, 20), owrt_logread(r)

    # 8. stop, disable: no process, no rc.d link
    r.ok("/etc/init.d/owsync stop")
    assert wait_for(lambda: owrt_instances(r) == {})
    assert wait_for(lambda: owrt_daemons(r) == []), owrt_daemons(r)
    # disabled, the script touches nothing in UCI: a key there stays (no daemon
    # reads it), what is staged stays staged, nothing is committed
    r.ok("uci set owsync.main.enabled=0; uci set owsync.main.key=$(owsync genkey)")
    r.ok("uci commit owsync; uci set owsync.main.poll_interval=77")
    committed = r.ok("cat /etc/config/owsync")
    for action in ("start", "reload"):  # reload: what LuCI's Save & Apply runs
        res = r.sh(f"/etc/init.d/owsync {action}")
        assert res.returncode == 0 and res.stderr == "", (action, res.stderr)
    assert owrt_instances(r) == {} and r.ok("cat /etc/config/owsync") == committed
    assert r.ok("uci changes owsync").strip() == "owsync.main.poll_interval='77'"
    r.ok("uci revert owsync; uci delete owsync.main.key; uci commit owsync")
    r.ok("/etc/init.d/owsync disable")
    assert r.ok("ls /etc/rc.d").split() == []
    assert r.sh("/etc/init.d/owsync enabled").returncode != 0


def initscript_fatal_error_logged_once(r: OpenWrtRoot) -> None:
    """The daemon refuses to start (disabled under its feet, then respawned):
    one line in logread, daemon.err, one prefix.  After initscript_admins_day."""
    r.ok("/etc/init.d/owsync stop; uci set owsync.main.enabled=1; uci commit owsync")
    r.ok(f"printf '%s\\n' {KEY} > /etc/owsync/key; /etc/init.d/owsync start")
    assert wait_for(lambda: owrt_running_pid(r) is not None, 20)
    victim = owrt_running_pid(r)
    r.ok(f"uci set owsync.main.enabled=0; uci commit owsync; kill -9 {victim}")
    refused = "owsync is disabled (uci set owsync.main.enabled=1)"
    assert wait_for(lambda: refused in owrt_logread(r), 20), owrt_logread(r)
    time.sleep(1)
    lines = [ln for ln in owrt_logread(r).splitlines() if refused in ln]
    r.ok("/etc/init.d/owsync stop")
    assert len(lines) == 1 and re.search(r"daemon\.err owsync\[\d+\]: owsync is disabled", lines[0])
    assert "owsync: error:" not in lines[0], lines


# --- the packages, installed by opkg and apk in an OpenWrt root -----------------

# apk refuses a local package on a tmpfs root (lost at reboot): the chroot's is
PKG_TOOL = {"ipk": "opkg", "apk": "apk --no-network --allow-untrusted --force-non-repository"}
# the test's base package (what the chroot has), then owsync's three
PKG_INSTALL = {
    "ipk": ("install /pkgs/owrt-base_1_all.ipk",
            "install /pkgs/python3-pyuci_*.ipk /pkgs/owsync_*.ipk /pkgs/luci-app-owsync_*.ipk"),
    "apk": ("add --initdb /pkgs/owrt-base-1.apk",
            "add /pkgs/python3-pyuci-*.apk /pkgs/owsync-*.apk /pkgs/luci-app-owsync-*.apk"),
}  # fmt: skip


def stage_package_tools(staging: Path, packages: Path) -> None:
    """Into an OpenWrt root's staging tree: the packages under /pkgs, opkg and apk
    with their configuration, and a ``.pth`` that gives the host's python3 (the
    root's) OpenWrt's site-packages, where Py3Package installs, and the bindings."""
    shutil.copytree(packages, staging / "pkgs", ignore=shutil.ignore_patterns(".*"))
    shutil.copy(os.environ["OWSYNC_OPKG"], staging / "bin/opkg")
    (staging / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(os.environ["OWSYNC_APK"], staging / "usr/bin/apk")
    (staging / "etc/opkg.conf").write_text(
        "dest root /\nlists_dir ext /var/opkg-lists\n"
        "arch all 100\narch noarch 100\narch x86_64 200\n"
    )
    (staging / "etc/apk").mkdir(parents=True, exist_ok=True)
    (staging / "etc/apk/arch").write_text("x86_64\n")
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    dist = staging / "usr/lib/python3/dist-packages"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "zz-openwrt.pth").write_text(
        f"/usr/lib/{pyver}/site-packages\n{os.environ['OWSYNC_PYBINDINGS']}\n"
    )


# --- LuCI's checks, on the checkout's files or the installed package's ---------


def luci_status_and_sync_now(router: Router, browser) -> None:
    """The Status page shows the peer in sync; its "Sync now" brings a file the
    peer has and no poll would bring yet; no JavaScript error, no key in a reply."""
    s = Session(browser, router, "root")
    s.open("status")
    row = s.page.locator(f"#owsync-peers tr[data-peer='{router.peer}']")
    try:
        row.wait_for(timeout=15000)
    except Exception:
        s.screenshot("status-failed")
        raise AssertionError(f"{s.page.inner_text('body')}\n{s.errors}") from None
    assert "owsync-health-in-sync" in row.get_attribute("class")
    assert row.locator(".owsync-result").inner_text() == "ok"
    assert row.locator(".owsync-protocol").inner_text() == "v2"  # owsync listen: a v2 session
    assert f"Running (PID {router.status()['pid']})" in s.page.inner_text("#owsync-daemon")
    before = router.status()["peers"][0]["last_success"]

    router.r.ok("echo 'config firewall' > /srv/peer/firewall")
    time.sleep(0.5)
    assert router.r.sh("test -e /etc/config/firewall").returncode != 0  # no poll brings it
    row.locator("button.owsync-sync").click()
    assert wait_for(lambda: router.r.sh("cat /etc/config/firewall").stdout == "config firewall\n")
    s.page.wait_for_function(
        "() => /firewall from/.test(document.getElementById('owsync-history').innerText)",
        timeout=20000,
    )
    assert router.status()["peers"][0]["last_success"] > before
    s.screenshot("status")
    assert s.errors == [], s.errors
    assert not any(KEY in b for b in s.bodies)


def luci_read_only_user(router: Router, browser) -> None:
    """A read-only user sees the Status page and cannot sync, nor change a setting:
    the page says so and rpcd refuses the write methods whatever a page sends."""
    s = Session(browser, router, "viewer")
    s.open("status")
    row = s.page.locator(f"#owsync-peers tr[data-peer='{router.peer}']")
    row.wait_for(timeout=15000)
    assert row.locator("button.owsync-sync").is_disabled()
    assert s.page.locator("#owsync-sync-all").is_disabled()
    # rpcd refuses the write methods to this session, whatever the page shows
    refused = s.page.evaluate(
        """(peer) => L.require('rpc').then(rpc => rpc.declare({
        object: 'luci.owsync', method: 'sync_peer', params: ['peer']})(peer))
        .then(r => 'accepted: ' + JSON.stringify(r), e => 'refused: ' + e.message)""",
        router.peer,
    )
    assert refused.startswith("refused"), refused
    s.open("settings")
    assert s.page.locator("#owsync-key-save").is_disabled()
    assert s.page.locator("#owsync-key-input").is_disabled()
    # LuCI's Map is read-only for this session: every field, and no Save & Apply
    fields = s.page.locator("#view .cbi-map input:not([type=hidden]), #view .cbi-map select")
    assert fields.count() >= 5 and all(f.is_disabled() for f in fields.all())
    apply = s.page.locator(".cbi-page-actions .cbi-button-apply")
    assert apply.count() == 0 or apply.first.get_attribute("disabled") is not None
    assert s.errors == [], s.errors
    # uhttpd, asking rpcd, refuses the write methods to this session, whatever a page shows
    # (sent with fetch: LuCI's own rpc layer takes a refusal for an expired login)
    for obj, method, args in (("luci.owsync", "sync_peer", {"peer": router.peer}),
                              ("luci.owsync", "sync", {}), ("owsync.key", "set", {"key": KEY}),
                              ("uci", "set", {"config": "owsync", "section": "main",
                                              "values": {"enabled": "0"}})):  # fmt: skip
        reply = s.page.evaluate(
            """([o, m, a]) => fetch(L.env.ubuspath, {method: 'POST', body: JSON.stringify(
                {jsonrpc: '2.0', id: 1, method: 'call', params: [L.env.sessionid, o, m, a]})})
                .then(r => r.json())""",
            [obj, method, args],
        )
        assert reply.get("error", {}).get("message") == "Access denied", (obj, method, reply)
    allowed = s.page.evaluate(
        """() => fetch(L.env.ubuspath, {method: 'POST', body: JSON.stringify({jsonrpc: '2.0',
            id: 1, method: 'call', params: [L.env.sessionid, 'luci.owsync', 'status', {}]})})
            .then(r => r.json())"""
    )
    assert allowed["result"][0] == 0 and allowed["result"][1]["pid"] == router.status()["pid"]
    assert not any(KEY in b for b in s.bodies)


def luci_settings_save_and_apply(router: Router, browser) -> None:
    """Settings: add a peer and refuse owsync 1.2.0, Save & Apply: the same daemon
    (its PID) has the new peer, confirmed by the browser and still there after
    LuCI's rollback timeout."""
    s = Session(browser, router, "root")
    pid = router.status()["pid"]
    s.open("settings")
    status = s.page.inner_text("#owsync-key-status")
    assert fingerprint(bytes.fromhex(KEY)) in status
    new_peer = f"127.0.0.1:{router.peer2_port}"
    dyn = s.page.locator("[data-name='peer'] .cbi-dynlist, #cbid\\.owsync\\.main\\.peer").first
    dyn.locator("input[type=text]").last.fill(new_peer)
    dyn.locator(".cbi-button-add").click()
    s.screenshot("settings")
    # and refuse owsync 1.2.0 from now on (both routers here are ours: protocol 2)
    s.page.locator(".cbi-tabmenu").get_by_text("Advanced").click()
    s.page.select_option("select[id='widget.cbid.owsync.main.min_protocol']", "2")
    s.page.locator(".cbi-page-actions").get_by_text("Save & Apply").click()
    # LuCI applies with a rollback timer, which the browser confirms when it can reach
    # the router again; unconfirmed, the change would be undone a few seconds later
    s.page.wait_for_function(
        "() => /Configuration changes applied/.test(document.body.innerText)", timeout=60000
    )
    assert wait_for(lambda: len((router.status() or {}).get("peers", [])) == 2, 40), router.r.sh(
        "/sbin/logread"
    ).stdout
    st = router.status()
    assert st["pid"] == pid and new_peer in [p["address"] for p in st["peers"]]
    assert f"list peer '{new_peer}'" in router.r.ok("cat /etc/config/owsync")
    assert "option min_protocol '2'" in router.r.ok("cat /etc/config/owsync")
    assert st["min_protocol"] == 2
    time.sleep(12)  # past LuCI's rollback timeout (10 s): the change stayed
    assert len(router.status()["peers"]) == 2
    assert re.search(r"configuration reloaded: 2 peer", router.r.ok("/sbin/logread -e owsync"))
    assert s.errors == [], s.errors
    assert not any(KEY in b for b in s.bodies)
