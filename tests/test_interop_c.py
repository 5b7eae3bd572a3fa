"""Mixed fleet: this owsync against the C owsync 1.2.0, both directions.

Needs a built C owsync binary: set OWSYNC_C_BIN to its path (README,
"Testing against owsync 1.2.0").  Skipped with that reason otherwise.
1.2.0's own daemon suite, run against this owsync, is test_c_daemon_suite.py
(OWSYNC_C_SUITE).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time

import pytest
from conftest import KEY, free_port, summary

C_BIN = os.environ.get("OWSYNC_C_BIN", "")

pytestmark = pytest.mark.skipif(
    not (C_BIN and os.access(C_BIN, os.X_OK)),
    reason="set OWSYNC_C_BIN to a built C owsync 1.2.0 binary to run the interop tests",
)


def c_env(plain: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OWSYNC_KEY"}
    if not plain:
        env["OWSYNC_KEY"] = KEY
    return env


class CListener:
    def __init__(self, d, db, plain: bool, log) -> None:
        self.port = free_port()
        args = [C_BIN, "listen", "-H", "127.0.0.1", "-P", str(self.port), "-d", str(d)]
        args += ["-b", str(db), "-i", "*"] + (["-p"] if plain else [])
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=c_env(plain), stdout=self.log, stderr=self.log)
        time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def c_tree(tmp_path, text: str = "c"):
    """The C node's directory, with one file of its own."""
    cdir = tmp_path / "c"
    cdir.mkdir()
    (cdir / "from-c").write_text(text)
    return cdir


def c_connect(cdir, db, port: int, plain: bool):
    # this C build takes the port from -P, not from PEER
    args = [C_BIN, "connect", "127.0.0.1", "-P", str(port), "-d", str(cdir), "-b", str(db)]
    args += ["-i", "*"] + (["-p"] if plain else [])
    return subprocess.run(args, env=c_env(plain), capture_output=True, text=True, timeout=60)


def py_node(nodes, plain: bool, *extra: str):
    """Our node, with one file of its own."""
    py = nodes("py", key=None if plain else KEY, extra=(["-p"] if plain else []) + list(extra))
    py.write("from-py", "py")
    return py


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_python_connects_to_c_listener(nodes, tmp_path, plain):
    cdir = c_tree(tmp_path, "written by C's node")
    c = CListener(cdir, tmp_path / "c.db", plain, tmp_path / "c.log")
    try:
        extra = ["-p", "-i", "*"] if plain else []
        py = nodes("py", key=None if plain else KEY, extra=extra)
        py.write("from-py", b"\x00\x01\x02\xff")
        os.chmod(py.write("sub/hook.sh", "#!/bin/sh\n"), 0o755)
        r = py.run("connect", f"127.0.0.1:{c.port}", *py.opts())
        assert r.returncode == 0, r.stderr
        assert (summary(r)["received"], summary(r)["sent"]) == (1, 2)
        assert (cdir / "from-py").read_bytes() == b"\x00\x01\x02\xff"
        assert stat.S_IMODE((cdir / "sub/hook.sh").stat().st_mode) == 0o755
        assert (py.dir / "from-c").read_text() == "written by C's node"
        # a deletion here reaches the C node through our tombstone
        (py.dir / "from-py").unlink()
        r = py.run("connect", f"127.0.0.1:{c.port}", *py.opts())
        assert r.returncode == 0, r.stderr
        assert not (cdir / "from-py").exists()
    finally:
        c.stop()


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_c_connects_to_python_listener(nodes, tmp_path, plain):
    extra = ["-p", "-i", "*"] if plain else []
    py = nodes("py", key=None if plain else KEY, extra=extra)
    py.write("from-py", "ours")
    py.listen()
    cdir = c_tree(tmp_path, "theirs")
    r = c_connect(cdir, tmp_path / "c.db", py.port, plain)
    assert r.returncode == 0, r.stderr
    py.wait_log("ok: received 1")
    assert (py.dir / "from-c").read_text() == "theirs"
    assert (cdir / "from-py").read_text() == "ours"
    # the C node deletes; our listener applies its tombstone
    (cdir / "from-c").unlink()
    r = c_connect(cdir, tmp_path / "c.db", py.port, plain)
    assert r.returncode == 0, r.stderr
    py.wait_log("deleted 1")
    assert not (py.dir / "from-c").exists()


# --- protocol v2 is ours alone: with 1.2.0 both sides stay on v1 ----------------------------


def tree(d) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# What min_protocol 2 says of a 1.2.0 peer: PEER is the hostname its Hello claims
# (this build says "unknown").
REFUSAL = r"failed: \S+ speaks protocol 1 only \(owsync 1\.2\.0\?\); min_protocol 2 refuses it"


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_python_connecting_to_c_stays_on_protocol_1(nodes, tmp_path, plain):
    """Our Hello's v2 advertisement is a field 1.2.0 ignores; its Hello has none,
    so ours speaks v1 and says so."""
    cdir = c_tree(tmp_path)
    c = CListener(cdir, tmp_path / "c.db", plain, tmp_path / "c.log")
    try:
        py = py_node(nodes, plain)
        r = py.run("connect", f"127.0.0.1:{c.port}", *py.opts())
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("protocol 1"), r.stdout
        assert (summary(r)["received"], summary(r)["sent"], summary(r)["protocol"]) == (1, 1, 1)
        assert tree(cdir) == py.files() == {"from-c": b"c", "from-py": b"py"}
    finally:
        c.stop()


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_c_connecting_to_python_stays_on_protocol_1(nodes, tmp_path, plain):
    py = py_node(nodes, plain)
    py.listen()
    cdir = c_tree(tmp_path)
    r = c_connect(cdir, tmp_path / "c.db", py.port, plain)
    assert r.returncode == 0, r.stderr
    line = [x for x in py.wait_log("ok: received 1").splitlines() if "sync with" in x][-1]
    assert " ok: received 1, sent 1" in line and line.endswith("protocol 1"), line
    assert tree(cdir) == py.files() == {"from-c": b"c", "from-py": b"py"}


class KilledBySigpipe(AssertionError):
    """The 1.2.0 process died of SIGPIPE.

    1.2.0 does not ignore SIGPIPE: a peer that hangs up right after the Hellos,
    before 1.2.0 has written its SyncState, kills it (exit 141), its daemon too,
    at every poll.  min_protocol 2 did exactly that (as initiator and as
    responder) until the refusing side learnt to linger: it half-closes and
    reads what 1.2.0 still sends, so 1.2.0 sees the end of the stream instead.
    """


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_a_min_protocol_2_python_listener_refuses_c(nodes, tmp_path, plain):
    """min_protocol 2 on our listener: 1.2.0's session is refused after the Hellos,
    with the reason in our log; nothing changes on either side."""
    py = py_node(nodes, plain, "--min-protocol", "2")
    py.listen()
    cdir = c_tree(tmp_path)
    py_before, c_before = py.files(), tree(cdir)
    r = c_connect(cdir, tmp_path / "c.db", py.port, plain)
    log = py.wait_log("min_protocol 2 refuses it")
    line = [x for x in log.splitlines() if "sync with" in x][-1]
    assert re.search(REFUSAL, line), log
    assert r.returncode != 0, (r.stdout, r.stderr)  # 1.2.0 sees the connection end early
    assert py.files() == py_before and tree(cdir) == c_before
    assert not [p for p in py.dir.rglob(".owsync-*")]
    if r.returncode == -signal.SIGPIPE:
        raise KilledBySigpipe("1.2.0's connect died of SIGPIPE")


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_python_connect_with_min_protocol_2_refuses_a_c_listener(nodes, tmp_path, plain):
    """`connect --min-protocol 2` to 1.2.0: exit 1, the reason on stderr, the summary
    says protocol 1; nothing changes on either side (1.2.0 then syncs with it as
    before, without the option)."""
    cdir = c_tree(tmp_path)
    c = CListener(cdir, tmp_path / "c.db", plain, tmp_path / "c.log")
    try:
        py = py_node(nodes, plain)
        py_before, c_before = py.files(), tree(cdir)
        r = py.run("connect", f"127.0.0.1:{c.port}", *py.opts(), "--min-protocol", "2")
        assert r.returncode == 1, (r.stdout, r.stderr)
        err = [x for x in r.stderr.splitlines() if "error" in x]
        assert len(err) == 1 and re.search(REFUSAL, err[0]), r.stderr
        assert "Traceback" not in r.stderr
        assert summary(r)["protocol"] == 1
        time.sleep(0.5)  # 1.2.0's side of the session ends
        assert py.files() == py_before and tree(cdir) == c_before
        if c.proc.poll() == -signal.SIGPIPE:
            raise KilledBySigpipe("the 1.2.0 listener died of SIGPIPE")
        assert c.proc.poll() is None, c.proc.returncode
        r = py.run("connect", f"127.0.0.1:{c.port}", *py.opts())
        assert r.returncode == 0, r.stderr
        assert tree(cdir) == py.files() == {"from-c": b"c", "from-py": b"py"}
    finally:
        c.stop()
