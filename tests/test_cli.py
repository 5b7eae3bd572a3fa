"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from conftest import Hostile, Node, base_env, owsync_cmd

from owsync import __version__
from owsync.core import protocol
from owsync.service.config import ConfigError


def run(*args, key=None, cwd=None):
    import subprocess

    return subprocess.run(
        owsync_cmd(*args), env=base_env(key), capture_output=True, text=True, timeout=30, cwd=cwd
    )


def test_genkey_prints_64_fresh_hex_characters():
    keys = {run("genkey").stdout.strip() for _ in range(3)}
    assert len(keys) == 3
    assert all(re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)


def test_version_and_help():
    assert run("-V").stdout.strip() == f"owsync {__version__}"
    h = run("--help")
    assert h.returncode == 0 and "connect PEER" in h.stdout and "OWSYNC_KEY" in h.stdout


def test_bad_input_is_one_error_line_and_nonzero():
    cases = [
        ("connect", "127.0.0.1:1", "--debug-clock-offset", "5"),  # unknown option
        ("connect", "127.0.0.1:1", "--key", "00"),  # there is no key option
        ("frobnicate",),
        (),
        ("connect",),
        ("connect", "host:0"),
        ("listen", "-P", "notaport"),
        ("listen", "--min-protocol", "3"),
        ("connect", "127.0.0.1:1", "--min-protocol", "v2"),
        ("scan", "/nonexistent/dir", "-i", "*"),
        ("listen", "-c", "/nonexistent.conf"),
    ]
    for args in cases:
        r = run(*args)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("owsync: error:"), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_connect_to_nothing_fails_cleanly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    r = run(
        "connect",
        f"127.0.0.1:{port}",
        "-d",
        str(tmp_path),
        "-b",
        str(tmp_path / "db"),
        "-i",
        "*",
        "-p",
    )
    assert r.returncode == 1 and "cannot connect" in r.stderr and "Traceback" not in r.stderr


def test_scan_lists_records_and_tombstones(tmp_path):
    n = Node(tmp_path, "n")
    n.write("dhcp", "x")
    n.write("sub/hook.sh", "#!/bin/sh\n")
    os.chmod(n.dir / "sub/hook.sh", 0o755)
    n.write(".hidden", "h")
    os.symlink("/etc/passwd", n.dir / "link")
    r = run("scan", str(n.dir), "-i", "*", "--json")
    assert r.returncode == 0, r.stderr
    recs = {x["path"]: x for x in json.loads(r.stdout)}
    assert set(recs) == {"dhcp", "sub/hook.sh"}
    assert recs["sub/hook.sh"]["mode"] == 0o755 and recs["dhcp"]["size"] == 1
    assert (
        recs["dhcp"]["hash"] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    )
    text = run("scan", str(n.dir), "-i", "*", "-e", "sub/*").stdout
    assert "dhcp\t2d7116" in text and "hook.sh" not in text and "# 1 files, 0 tombstones" in text


def test_scan_shows_tombstones_from_the_database(nodes):
    a, b = nodes("a").listen(), nodes("b")
    b.write("gone", "x")
    b.sync_ok(a)
    (b.dir / "gone").unlink()
    b.sync_ok(a)
    r = run("scan", str(b.dir), "-b", str(b.db), "-i", "*", "--json")
    (rec,) = json.loads(r.stdout)
    assert rec["path"] == "gone" and rec["deleted"] is True and rec["hash"] is None


def test_scan_without_include_says_nothing_syncs(tmp_path):
    (tmp_path / "f").write_text("x")
    r = run("scan", str(tmp_path))
    assert "no include pattern" in r.stderr and "# 0 files" in r.stdout


def test_version_mismatch_aborts_cleanly(nodes):
    a = nodes("a")
    a.write("keep", "k")
    a.listen()
    h = Hostile(a.port)
    h.send(protocol.Hello("future", time.time(), version=2))
    h.recv_until_closed()
    h.close()
    assert "protocol version 2" in a.wait_log("protocol version 2")
    assert not a.db.exists()  # nothing scanned, nothing written


def test_min_protocol_from_the_file_and_the_option_reaches_every_context(tmp_path):
    from owsync import cli
    from owsync.service.daemon import Daemon

    conf = tmp_path / "c.conf"
    conf.write_text(f"sync_dir={tmp_path}\nplain_mode=1\npeer=127.0.0.1\nmin_protocol=2\n")

    def config(*args):
        return cli.build_config(cli.parse_args(["listen", *args]))

    assert config().min_protocol == 1
    assert config("-c", str(conf)).min_protocol == 2
    assert config("-c", str(conf), "--min-protocol", "1").min_protocol == 1  # the option wins
    cfg = config("--min-protocol", "2", "-p", "-d", str(tmp_path), "-b", str(tmp_path / "db"))
    assert cli.make_context(cfg, encrypted=False).min_protocol == 2
    d = Daemon(config("-c", str(conf), "-b", str(tmp_path / "db")))
    assert d.ctx_in.min_protocol == d.ctx_out.min_protocol == 2
    assert d._context(1.0).min_protocol == 2  # the one a restore uses
    conf.write_text(f"sync_dir={tmp_path}\nplain_mode=1\nmin_protocol=3\n")
    with pytest.raises(ConfigError, match=f"^{conf}:3: bad value for min_protocol: '3'"):
        config("-c", str(conf))


@pytest.mark.parametrize(
    "args, line",
    [
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["status", "-x"], "unrecognized arguments: -x"),
        (["daemon", "-c"], "argument -c/--config: expected one argument"),
        (["listen", "-P", "--json"], "argument -P/--port: expected one argument"),
        (["status", "--json=1"], "argument --json: ignored explicit argument '1'"),
        (["listen", "-Px"], "bad value for --port: 'x'"),
        (["listen", "--port=-1"], "bad value for --port: '-1'"),
    ],
)
def test_a_bad_command_line_is_one_line_and_exit_2(args, line):
    r = run(*args)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert r.stderr.startswith("owsync: error: ") and line in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_options_spelled_every_way_parse_alike(tmp_path):
    from owsync import cli

    d = str(tmp_path)
    ways = [
        ["scan", d, "-i", "*.conf", "-e", "x", "-fv"],
        ["-f", "-v", "scan", "--include=*.conf", d, "--exclude", "x"],
        ["scan", "-i*.conf", "-e=x", "-vf", "--", d],
    ]
    got = [vars(cli.parse_args(w)) for w in ways]
    for g in got:
        assert g["command"] == "scan" and g["args"] == [d]
        assert g["include"] == ["*.conf"] and g["exclude"] == ["x"]
        assert g["foreground"] and g["verbose"]
    assert got[0] == got[1] == got[2]
