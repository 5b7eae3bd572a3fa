"""Helpers for tests that run real owsync processes on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from owsync.core.state import loads_db_doc, replay_journal

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
    from luci_standin import chromium_path

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


class DaemonNode(Child):
    """One `owsync daemon` with its key=value file, directory, database and log."""

    def __init__(self, root: Path, name: str, host="127.0.0.1") -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = root / f"{name}.db"
        self.sock = root / f"{name}.sock"
        self.conf = root / f"{name}.conf"
        self.log = root / f"{name}.log"
        self.host = host
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def configure(self, peers, poll=60, extra="") -> DaemonNode:
        lines = [
            f"bind_host={self.host}",
            f"port={self.port}",
            f"sync_dir={self.dir}",
            f"database={self.db}",
            f"encryption_key={KEY}",
            f"control_socket={self.sock}",
            f"poll_interval={poll}",
            "log_level=3",
            "include=*",
            *(f"peer={p}" for p in peers),
        ]
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.conf.chmod(0o600)  # it holds the key
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


C_BIN = os.environ.get("OWSYNC_C_BIN", "")


def c_bin() -> str | None:
    """The owsync 1.2.0 binary named by OWSYNC_C_BIN, if it can run."""
    return C_BIN if C_BIN and os.access(C_BIN, os.X_OK) else None


class CDaemonNode(Child):
    """One owsync 1.2.0 `daemon` (OWSYNC_C_BIN), as DaemonNode runs ours.

    1.2.0 reaches every peer on its own ``port`` (``peer=`` takes an address
    only), so the nodes of a mesh with it listen on addresses of their own and
    one common port.  Its database is JSON: ``{"files": {path: record}}``."""

    c = True

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

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def configure(self, peers, poll=30) -> CDaemonNode:
        """``peers``: addresses (1.2.0 adds its own port to each)."""
        lines = [
            f"bind_host={self.host}",
            f"port={self.port}",
            f"sync_dir={self.dir}",
            f"database={self.db}",
            f"encryption_key={KEY}",
            f"poll_interval={poll}",
            "include=*",
            *(f"peer={p}" for p in peers),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o600)
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
