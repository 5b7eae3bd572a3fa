"""Mixed fleet: this owsync against the C owsync 1.2.0, both directions.

Needs a built C owsync binary: set OWSYNC_C_BIN to its path (README,
"Testing against owsync 1.2.0").  Skipped with that reason otherwise.
1.2.0's own daemon suite, run against this owsync, is test_c_daemon_suite.py
(OWSYNC_C_SUITE).
"""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("plain", [False, True], ids=["encrypted", "plain"])
def test_python_connects_to_c_listener(nodes, tmp_path, plain):
    cdir = tmp_path / "c"
    cdir.mkdir()
    (cdir / "from-c").write_text("written by C's node")
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
    cdir = tmp_path / "c"
    cdir.mkdir()
    (cdir / "from-c").write_text("theirs")
    # this C build takes the port from -P, not from PEER
    args = [C_BIN, "connect", "127.0.0.1", "-P", str(py.port), "-d", str(cdir)]
    args += ["-b", str(tmp_path / "c.db")]
    args += ["-i", "*"] + (["-p"] if plain else [])
    r = subprocess.run(args, env=c_env(plain), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    py.wait_log("ok: received 1")
    assert (py.dir / "from-c").read_text() == "theirs"
    assert (cdir / "from-py").read_text() == "ours"
    # the C node deletes; our listener applies its tombstone
    (cdir / "from-c").unlink()
    r = subprocess.run(args, env=c_env(plain), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    py.wait_log("deleted 1")
    assert not (py.dir / "from-c").exists()
