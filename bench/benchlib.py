"""What the bench scripts share (bench/ is on sys.path when one of them runs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether a socket listens on ``port``, from /proc/net/tcp (state 0A):
    no probe connection, which the listener would take for a session."""
    want = f":{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(want) and fields[3] == "0A":
            return True
    return False


def listening_on(host: str, port: int) -> bool:
    """Whether a socket listens on IPv4 host:port (/proc/net/tcp, no probe connection)."""
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":
            return True
    return False


def wait_for(pred, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Whether ``pred()`` holds within ``timeout`` seconds, looked at every ``step``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_daemon_conf(
    conf: Path,
    host: str,
    port: int,
    sync_dir: Path,
    db: Path,
    key: str,
    peers: list[str],
    *,
    sock: Path | None = None,
    poll: float | None = None,
    log_level: int | None = None,
    extra: str = "",
) -> None:
    """The key=value file of a daemon (ours, or owsync 1.2.0's without ``sock``
    and ``log_level``) syncing all of ``sync_dir``; root-only: it holds the key."""
    lines = [
        f"bind_host={host}",
        f"port={port}",
        f"sync_dir={sync_dir}",
        f"database={db}",
        f"encryption_key={key}",
        *([f"control_socket={sock}"] if sock is not None else []),
        *([f"poll_interval={poll}"] if poll is not None else []),
        # 2, info: one line per session, which is how the benches count sessions
        *([f"log_level={log_level}"] if log_level is not None else []),
        "include=*",
        *(f"peer={p}" for p in peers),
    ]
    conf.write_text("\n".join(lines) + "\n" + extra)
    conf.chmod(0o600)


def stop_child(proc: subprocess.Popen | None, timeout: float = 20) -> int | None:
    """SIGTERM to our own child, by its PID; SIGKILL if it will not end.  Its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def scratch(prefix: str, parent: str | Path | None = None, keep: bool = False, say=print):
    """A new work directory under ``parent`` (the system's temp dir by default),
    removed at the end unless ``keep`` (then ``say`` tells where it is)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        if keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


class Paced(threading.Thread):
    """A thread that calls ``step()`` ``rate`` times a second, evenly paced,
    until stop(); while ``paused`` is set it waits, and the pace starts over
    after.  What step() raises ends it, and stop() raises it again, as
    ``what`` failing."""

    what = "the paced thread"

    def __init__(self, name: str, rate: float) -> None:
        super().__init__(name=name, daemon=True)
        self.rate = rate
        self.halt = threading.Event()
        self.paused = threading.Event()  # set: no steps until cleared
        self.error: BaseException | None = None

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        start, n = time.monotonic(), 0
        try:
            while not self.halt.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    start, n = time.monotonic(), 0
                    continue
                self.step()
                n += 1
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    self.halt.wait(delay)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        if self.error is not None:
            raise RuntimeError(f"{self.what} failed: {self.error!r}") from self.error


def fill(d: Path, files: int, size: int, tag: bytes = b"", mtime: float | None = None) -> None:
    """``files`` files of ``size`` bytes in 100 subdirectories, each distinct
    (its number in its last 8 bytes, after ``tag``), with ``mtime`` if given."""
    blob = os.urandom(size)
    for i in range(files):
        sub = d / f"d{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"f{i:05d}"
        p.write_bytes(blob[: -8 - len(tag)] + tag + i.to_bytes(8, "big"))
        if mtime is not None:
            os.utime(p, (mtime, mtime))


def count_files(root: Path) -> int:
    """How many files are under ``root``, dot-files and dot-directories left out."""
    n = 0
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for f in files if not f.startswith("."))
    return n


def tree(root: Path) -> dict[str, bytes]:
    """The synced files under ``root`` (dot-files, which owsync never syncs, left out)."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if p.is_file() and not p.is_symlink():
                out[str(rel)] = p.read_bytes()
        except OSError:
            pass  # replaced or deleted while read: the next look sees it
    return out
