"""What the bench scripts share (bench/ is on sys.path when one of them runs)."""

from __future__ import annotations

import os
import socket
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
