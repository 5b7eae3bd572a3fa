"""Helpers for tests that run real owsync processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
KEY = "8b2b64411001592abf237c204845e610e5a743a1472822b3d2b86069ec3658d3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def owsync_cmd(*args: str, clock_offset: float | None = None) -> list[str]:
    if clock_offset is not None:
        return [sys.executable, str(HERE / "clockshift.py"), str(clock_offset), *args]
    return [sys.executable, "-m", "owsync", *args]


# never passed on from the test's own environment: each node gets its own
INHERITED_NOT = ("OWSYNC_KEY", "OWSYNC_MAX_PROTOCOL", "OWSYNC_CRASH_AT", "OWSYNC_CRASH_TRACE",
                 "OWSYNC_STOP_AT")  # fmt: skip


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
        self.spawn(owsync_cmd(*args, clock_offset=clock_offset), self.environ(), self.log)
        deadline = time.monotonic() + 15
        while "listening on" not in self.log.read_text():
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
