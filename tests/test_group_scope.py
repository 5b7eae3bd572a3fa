"""A group reads and watches only what its patterns can match.

An /etc-like tree with a deep subtree: a group syncing passwd, shadow and
group opens /etc alone (the directories a real `owsync scan` opens, seen by
strace) and holds one inotify watch (counted by the kernel, in
/proc/self/fdinfo); main's `*` opens and watches every directory, as before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import DaemonNode, base_env, free_port, owsync_cmd, tracked, wait_for

from owsync.core.filters import Filter
from owsync.service.watcher import Inotify, Watcher

NARROW = ["passwd", "shadow", "group"]
DEPTH = 12


def etc_tree(tmp_path: Path) -> tuple[Path, list[Path]]:
    """An /etc: the narrow group's files, config/, dropbear/, and a deep subtree."""
    etc = tmp_path / "etc"
    dirs = [etc, etc / "config", etc / "dropbear"]
    deep = etc / "deep"
    for i in range(DEPTH):
        deep = deep / f"d{i}"
        dirs.append(deep)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "file").write_text(str(d))
    dirs += [p for p in (etc / "deep").rglob("*") if p.is_dir() and p not in dirs]
    dirs.append(etc / "deep")
    for name in NARROW:
        (etc / name).write_text(name)
    (etc / "dropbear/dropbear_rsa_host_key").write_text("k")
    return etc, sorted(set(dirs))


def opened_dirs(tmp_path: Path, etc: Path, *patterns: str) -> tuple[set[str], list[str]]:
    """The directories of the tree a real `owsync scan` opens, and what it lists."""
    if shutil.which("strace") is None:
        pytest.skip("strace is needed to see which directories a scan opens")
    trace = tmp_path / "trace"
    includes = [a for p in patterns for a in ("-i", p)]
    cmd = ["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace),
           *owsync_cmd("scan", str(etc), *includes, "-b", str(tmp_path / "scan.db"))]  # fmt: skip
    r = subprocess.run(cmd, env=base_env(None), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    opened = set()
    for line in trace.read_text().splitlines():
        m = re.search(r'openat\([^,]+, "([^"]+)", [^)]*O_DIRECTORY', line)
        if m and (m.group(1) == str(etc) or m.group(1).startswith(f"{etc}/")):
            opened.add(m.group(1))
    listed = [ln.split("\t")[0] for ln in r.stdout.splitlines() if not ln.startswith("#")]
    return opened, listed


def test_a_narrow_group_scans_its_directory_alone(tmp_path):
    etc, dirs = etc_tree(tmp_path)
    opened, listed = opened_dirs(tmp_path, etc, *NARROW)
    assert opened == {str(etc)}
    assert listed == sorted(NARROW)
    # a pattern in a subdirectory: that subtree and the way to it
    opened, listed = opened_dirs(tmp_path, etc, "dropbear/*", "passwd")
    assert opened == {str(etc), f"{etc}/dropbear"}
    assert listed == ["dropbear/dropbear_rsa_host_key", "dropbear/file", "passwd"]
    # main's '*' (and a leading wildcard) walks every directory, as before
    for pattern in ("*", "*.crt"):
        opened, _ = opened_dirs(tmp_path, etc, pattern)
        assert opened == {str(d) for d in dirs}, pattern
    assert len(dirs) > DEPTH + 3


def inotify_watches(fd: int) -> int:
    """The kernel's own count of the watches on an inotify descriptor."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        return sum(1 for line in f if line.startswith("inotify wd:"))


def test_a_narrow_group_watches_its_directory_alone(tmp_path):
    etc, dirs = etc_tree(tmp_path)
    narrow = Inotify(str(etc), Filter(NARROW))
    whole = Inotify(str(etc), Filter(["*"]))
    unscoped = Inotify(str(etc))
    try:
        assert inotify_watches(narrow.fd) == narrow.watches == 1
        assert inotify_watches(whole.fd) == inotify_watches(unscoped.fd) == len(dirs)
        keys = Inotify(str(etc), Filter(["dropbear/*", "passwd"]))
        try:
            assert inotify_watches(keys.fd) == 2
        finally:
            keys.close()
    finally:
        for ino in (narrow, whole, unscoped):
            ino.close()


def test_the_watcher_sees_the_groups_files_and_a_new_directory_it_can_hold(tmp_path):
    etc, _ = etc_tree(tmp_path)
    shutil.rmtree(etc / "dropbear")
    seen: list[set[str] | None] = []
    stop = threading.Event()
    w = Watcher(str(etc), seen.append, stop, scope=Filter(["dropbear/*", "passwd"]))
    w.start()
    try:
        assert wait_for(lambda: w.inotify is not None, 10)
        ino = w.inotify
        assert ino is not None and inotify_watches(ino.fd) == 1
        # a change deep down is not watched; the group's own file is
        (etc / "deep/d0/file").write_text("changed")
        (etc / "config/file").write_text("changed")
        (etc / "passwd").write_text("root:x:0:0")
        assert wait_for(lambda: any(s and "passwd" in s for s in seen), 10), seen
        assert all(s is not None and not {"deep/d0/file", "config/file"} & s for s in seen)
        # the directory the group's patterns reach appears: watched from then on
        (etc / "dropbear").mkdir()
        assert wait_for(lambda: inotify_watches(ino.fd) == 2, 10)
        (etc / "dropbear/dropbear_ed25519_host_key").write_text("k")
        assert wait_for(
            lambda: any(s and "dropbear/dropbear_ed25519_host_key" in s for s in seen), 10
        ), seen
        (etc / "other").mkdir()  # one they cannot reach: not watched
        (etc / "passwd").write_text("root:x:0:0:again")
        assert wait_for(lambda: sum(1 for s in seen if s and "passwd" in s) >= 2, 10), seen
        assert inotify_watches(ino.fd) == 2
    finally:
        stop.set()
        w.join(15)
    assert not w.is_alive()
    assert os.path.isdir(etc / "other")


def daemon_watches(pid: int) -> int:
    """Every inotify watch a process holds, as the kernel counts them."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                total += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            continue  # closed meanwhile
    return total


@pytest.fixture
def nodes(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def test_a_daemon_watches_each_group_where_its_patterns_can_match(tmp_path, nodes):
    """A real daemon with main, an /etc group for passwd/shadow/group and a
    key directory: one watch each, however deep /etc is (main's '*' watches
    its whole tree as ever)."""
    etc, dirs = etc_tree(tmp_path)
    (etc / "shadow").unlink()
    (etc / "dropbear/dropbear_rsa_host_key").unlink()
    a = nodes("a")
    (a.dir / "sub").mkdir()
    groups = (
        f"group.passwd.dir={etc}\n"
        + "".join(f"group.passwd.include={p}\n" for p in NARROW)
        + f"group.keys.dir={etc}/dropbear\ngroup.keys.include=dropbear_*_host_key\n"
    )
    a.configure([f"127.0.0.1:{free_port()}"], extra=groups).start()

    def files(name: str) -> int | None:
        row = next((g for g in a.status().get("groups", []) if g["name"] == name), None)
        return row and row["files"]

    assert wait_for(lambda: files("passwd") == 2 and files("keys") == 0, 30), a.text()
    # new files, noticed by the watchers alone (the next poll is a minute away)
    (etc / "shadow").write_text("root:*:1::::::")
    (etc / "dropbear/dropbear_ed25519_host_key").write_text("k")
    assert wait_for(lambda: files("passwd") == 3 and files("keys") == 1, 30), a.text()
    # main: its directory and 'sub'; passwd: /etc alone; keys: its directory
    assert daemon_watches(a.proc.pid) == 2 + 1 + 1, len(dirs)
