"""owsync 1.2.0's own daemon and security test suites, unchanged, run against this owsync.

Opt-in: set OWSYNC_C_SUITE to a checkout of the C owsync 1.2.0 source tree
(the directory holding ``tests/test_daemon.sh``; its ``tests/`` directory
itself is accepted too).  Nothing of the C tree is built or used but its
test scripts: ``OWSYNC`` points them at the ``owsync`` installed next to
``sys.executable`` (the venv's entry point), and the test asserts the
suite's exit status and its own summary: every test passed, none skipped.
Of the security suite (``tests/test_security.sh``) it asserts the exit
status, no failure, and that test 4 found "too large" in the output of the
``connect`` that pushed a file over the size limit (its PASS line, not the
"INFO: ... specific error message not found" it prints otherwise).

The suite, unchanged, runs ``pkill owsync`` (every process so named on the
machine) and ``rm -rf /tmp/node1 /tmp/node2 /tmp/test_node*`` before each of
its tests, binds fixed ports 21000-21017 on 127.0.0.1-3 and ::1, and asks
``netstat -tln``.  So it runs confined, in new PID, network and mount
namespaces (``unshare``; root, or unprivileged user namespaces): ``pkill``
sees only the suite's own processes, only a private loopback exists, and
``/tmp`` is a private tmpfs into which only the suite's directory and this
owsync's installation are bound back if they live under ``/tmp``.  Skipped,
with the reason, where that is impossible or a tool is missing (bash,
netstat from net-tools, pkill, timeout, unshare).  Takes about a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE_ENV = os.environ.get("OWSYNC_C_SUITE", "")

pytestmark = pytest.mark.skipif(
    not SUITE_ENV,
    reason="set OWSYNC_C_SUITE to the owsync 1.2.0 source tree to run its daemon suite",
)

TOOLS = ("bash", "netstat", "pkill", "timeout", "unshare")

# PID 1 of the new namespaces: loopback up, a private /tmp, then the suite.
INNER = r"""
import ctypes, fcntl, os, socket, struct, sys

suite, script, keep = sys.argv[1], sys.argv[2], sys.argv[3:]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # ip link set lo up
    req = struct.pack("16sH22x", b"lo", 0)
    flags = struct.unpack("16sH22x", fcntl.ioctl(s, 0x8913, req))[1]  # SIOCGIFFLAGS
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
libc = ctypes.CDLL(None, use_errno=True)

def mount(src, target, fstype, flags, data):
    if libc.mount(src.encode(), target.encode(), fstype, flags, data) != 0:
        err = ctypes.get_errno()
        sys.exit(f"mount {src} on {target}: {os.strerror(err)}")

fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in keep}  # before /tmp is hidden
mount("owsync-c-suite", "/tmp", b"tmpfs", 0, b"mode=1777")
for p, fd in fds.items():
    os.makedirs(p, exist_ok=True)
    mount(f"/proc/self/fd/{fd}", p, None, 4096 | 16384, None)  # MS_BIND | MS_REC
    os.close(fd)
os.chdir(suite)
os.execvp("bash", ["bash", "./" + script])
"""


def suite_dir() -> Path:
    root = Path(SUITE_ENV).resolve()
    for d in (root / "tests", root):
        if (d / "test_daemon.sh").is_file() and (d / "common.sh").is_file():
            return d
    pytest.fail(f"OWSYNC_C_SUITE={SUITE_ENV}: no tests/test_daemon.sh (and common.sh) there")


def under_tmp(paths: list[Path]) -> list[str]:
    """The directories to bind back into the private /tmp, outermost only."""
    inside = sorted({p for p in paths if p.is_relative_to("/tmp") and p != Path("/tmp")})
    kept: list[Path] = []
    for p in inside:
        if not any(p.is_relative_to(k) for k in kept):
            kept.append(p)
    return [str(p) for p in kept]


def unshare_cmd() -> list[str]:
    cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--mount"]
    if os.geteuid() != 0:
        cmd.insert(1, "--map-root-user")
    return cmd


def run_suite(script: str) -> tuple[int, str]:
    """1.2.0's ``tests/SCRIPT``, confined, against this owsync: its exit status
    and its output without colours."""
    suite = suite_dir()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"the 1.2.0 suites need {', '.join(missing)}")
    probe = subprocess.run(
        [*unshare_cmd(), sys.executable, "-c", "pass"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot confine the suite in namespaces: {probe.stderr.strip()}")
    owsync = Path(sys.executable).parent / "owsync"
    assert os.access(owsync, os.X_OK), f"{owsync} missing: install owsync (make venv)"

    import owsync as package

    installed = [owsync.parent, Path(sys.prefix), Path(package.__file__).parent.parent]
    keep = under_tmp([suite, *installed, *(p.resolve() for p in installed)])
    env = {k: v for k, v in os.environ.items() if k != "OWSYNC_KEY"}
    env["OWSYNC"] = str(owsync)
    r = subprocess.run(
        [*unshare_cmd(), sys.executable, "-c", INNER, str(suite), script, *keep],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    return r.returncode, re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)


def summary_counts(out: str) -> tuple[int, int, int, int]:
    """(total, skipped, passed, failed) from the suite's own summary."""
    total = re.search(r"^Total Tests: (\d+) \(\+ (\d+) skipped\)$", out, re.M)
    passed = re.search(r"^Passed: (\d+)$", out, re.M)
    failed = re.search(r"^Failed: (\d+)$", out, re.M)
    assert total and passed and failed, f"no summary from the suite:\n{out}"
    return int(total[1]), int(total[2]), int(passed[1]), int(failed[1])


def test_c_daemon_suite_passes_with_this_owsync():
    rc, out = run_suite("test_daemon.sh")
    expected = len(
        re.findall(r'^echo "TEST \d+:', (suite_dir() / "test_daemon.sh").read_text(), re.M)
    )
    counts = summary_counts(out)
    assert (rc, counts) == (0, (expected, 0, expected, 0)), (
        f"1.2.0 daemon suite: exit {rc}, total/skipped/passed/failed {counts},"
        f" expected {expected} passed\n{out}"
    )


def test_c_security_suite_passes_and_connect_says_too_large():
    rc, out = run_suite("test_security.sh")
    _, _, passed, failed = summary_counts(out)
    assert (rc, failed) == (0, 0) and passed, (
        f"1.2.0 security suite: exit {rc}, {failed} failed\n{out}"
    )
    test4 = out[out.index("TEST 4:") : out.index("TEST 5:")]
    assert "PASS: Large file rejected with error message" in test4, test4
