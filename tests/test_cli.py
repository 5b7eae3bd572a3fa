"""The command line as a user meets it: real processes, real files."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import pytest
from conftest import DaemonNode, Hostile, Node, base_env, free_port, owsync_cmd, tracked, wait_for

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


# --- sync groups: versions, restore and status -------------------------------------


def _replace_twice(src: Node, dst: Node, name: str) -> None:
    """``dst`` gets ``name`` from ``src``, then a newer content: one version kept."""
    src.write(name, "one\n", mtime=time.time() - 600)
    src.listen()
    dst.sync_ok(src)
    src.write(name, "two\n")
    dst.sync_ok(src)


@pytest.fixture
def grouped(nodes):
    """b keeps a version in main (dhcp) and one in its group ``keys`` (a host key),
    each store beside b's database where the configuration puts a group's."""
    a, b = nodes("a"), nodes("b")
    ak, bk = nodes("a.keys"), nodes("b.keys")  # b.keys.db, b.keys.versions: group keys of b
    _replace_twice(a, b, "dhcp")
    _replace_twice(ak, bk, "dropbear_rsa_host_key")
    return b, bk


def test_every_group_lists_its_versions_with_its_group_and_id(grouped):
    from owsync.service import versions_view
    from owsync.service.config import Config, Group

    b, bk = grouped
    cfg = Config(sync_dir=str(b.dir), database=str(b.db), include=["*"])
    cfg.groups = [Group("keys", str(bk.dir), ("*",))]
    out = versions_view.listing(cfg)
    got = {(v["group"], v["id"], v["path"]) for v in out["versions"]}
    assert got == {("main", 1, "dhcp"), ("keys", 1, "dropbear_rsa_host_key")}  # one id each
    assert out["total"] == 2 and set(out["stores"]) == {"main", "keys"}
    assert out["stores"]["keys"]["dir"] == str(b.db.with_suffix("")) + ".keys.versions"
    assert out["store"] == out["stores"]["main"]
    assert versions_view.listing(cfg, group="keys")["total"] == 1
    table = versions_view.format_listing(out["versions"])
    head, *rows = table.splitlines()
    assert head.split()[:3] == ["ID", "GROUP", "KEPT"]
    assert {r.split()[0] + " " + r.split()[1] for r in rows} == {"1 main", "keys:1 keys"}
    # a diff in each group, against the file of that group's directory
    d = versions_view.diff(cfg, "keys:1")
    assert d["group"] == "keys" and d["path"] == "dropbear_rsa_host_key"
    assert "-one\n+two\n" in d["diff"] and "(version keys:1)" in d["diff"]
    assert "-one\n+two\n" in versions_view.diff(cfg, 1)["diff"]
    assert versions_view.diff(cfg, "main:1")["path"] == "dhcp"
    with pytest.raises(LookupError, match="no version keys:7"):
        versions_view.diff(cfg, "keys:7")
    with pytest.raises(LookupError, match="no group 'other'"):
        versions_view.diff(cfg, "other:1")
    for bad in ("keys:", ":1", "keys:x", "", "-1", -1, 1.5, None, "1e3"):
        with pytest.raises(ValueError, match="is not a version"):
            versions_view.parse_ref(bad)
    assert versions_view.parse_ref(" 12 ") == ("main", 12)
    assert versions_view.ref("main", 3) == 3 and versions_view.ref("keys", 3) == "keys:3"


def _grouped_conf(b: Node, bk: Node):
    """b's key=value file with its group ``keys``; None where the file cannot say it yet."""
    from owsync.service.config import load_file

    conf = b.dir.parent / "b-groups.conf"
    conf.write_text(
        f"sync_dir={b.dir}\ndatabase={b.db}\nplain_mode=1\ninclude=*\n"
        f"control_socket={b.dir.parent / 'b.sock'}\n"
        f"group.keys.dir={bk.dir}\ngroup.keys.include=*\n"
    )
    try:
        return conf if [g.name for g in load_file(str(conf)).groups] == ["keys"] else None
    except ConfigError:
        return None


def test_versions_diff_and_restore_name_a_group_version_as_group_colon_id(grouped):
    b, bk = grouped
    conf = _grouped_conf(b, bk)
    if conf is None:
        pytest.skip("the key=value file's group.NAME.* keys are not in this tree (branch gconfig)")
    r = run("versions", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s*keys:1\s+keys\s.*dropbear_rsa_host_key$", r.stdout, re.M), r.stdout
    assert re.search(r"^\s*1\s+main\s.*dhcp$", r.stdout, re.M), r.stdout
    listed = json.loads(run("versions", "-c", str(conf), "--json").stdout)
    assert {v["group"] for v in listed["versions"]} == {"main", "keys"}
    # an absolute path names its group; the listing is that group's alone
    only = run("versions", str(bk.dir / "dropbear_rsa_host_key"), "-c", str(conf), "--json")
    assert [v["group"] for v in json.loads(only.stdout)["versions"]] == ["keys"]
    r = run("diff", "keys:1", "-c", str(conf))
    assert r.returncode == 0 and "-one\n+two\n" in r.stdout, r.stderr
    # no daemon runs: restore writes the group's directory itself, through its own store
    r = run("restore", "keys:1", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "restored dropbear_rsa_host_key from version keys:1\n"
    assert (bk.dir / "dropbear_rsa_host_key").read_text() == "one\n"
    assert (b.dir / "dhcp").read_text() == "two\n"  # main untouched
    # what the restore replaced is kept in that group's store, under its next id
    r = run("restore", str(bk.dir / "dropbear_rsa_host_key"), "keys:2", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert (bk.dir / "dropbear_rsa_host_key").read_text() == "two\n"
    r = run("restore", "dhcp", "1", "-c", str(conf))
    assert r.returncode == 0 and (b.dir / "dhcp").read_text() == "one\n", r.stderr
    for args, line in ((("restore", "keys:9"), "no version keys:9"),
                       (("diff", "other:1"), "no group 'other'"),
                       (("restore", "dhcp", "keys:1"), "no version keys:1 of dhcp"),
                       (("restore", "/elsewhere/x"), "not inside a synced directory")):  # fmt: skip
        r = run(*args, "-c", str(conf))
        assert r.returncode != 0 and r.stdout == "", (args, r.stdout)
        assert r.stderr.count("\n") == 1 and line in r.stderr, (args, r.stderr)


GROUPS_STATUS = [
    {
        "name": "main",
        "dir": "/etc/config",
        "enabled": True,
        "state": "syncing",
        "files": 12,
        "tombstones": 1,
        "last_change": 1733240000.1,
        "reload": [],
        "restart": [],
        "peers": {"192.168.1.2": "synced", "192.168.1.3": "synced"},
    },
    {
        "name": "dropbear",
        "dir": "/etc/dropbear",
        "enabled": True,
        "state": "syncing",
        "files": 2,
        "tombstones": 0,
        "last_change": None,
        "reload": [],
        "restart": ["dropbear"],
        "peers": {"192.168.1.2": "absent", "192.168.1.3": "v1"},
    },
    {
        "name": "acme",
        "dir": "/etc/acme",
        "enabled": True,
        "state": "waiting",
        "reason": "/etc/acme does not exist",
        "files": 0,
        "tombstones": 0,
        "last_change": None,
        "reload": ["uhttpd"],
        "restart": [],
        "peers": {"192.168.1.2": "pending"},
    },
]  # fmt: skip  (the shape of groups-design.md)


def _status(**over) -> dict:
    st = {"version": "2", "uptime": 3700, "sync_dir": "/etc/config", "encryption": True,
          "files": 12, "tombstones": 1, "peers": [], "history": []}  # fmt: skip
    st.update(over)
    return st


def test_status_shows_a_row_per_group_with_each_peer_and_why_one_waits():
    from owsync import cli

    assert "GROUP" not in cli.format_status(_status(groups=GROUPS_STATUS[:1]))  # main alone
    text = cli.format_status(_status(groups=GROUPS_STATUS, history=[
        {"time": 1733240000, "direction": "incoming", "peer": "192.168.1.2", "ok": True,
         "received": 1, "sent": 0, "deleted": 0, "arrived": ["dropbear_rsa_host_key"],
         "removed": [], "group": "dropbear"}]))  # fmt: skip
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("GROUP"))
    assert lines[head].split() == ["GROUP", "DIR", "STATE", "FILES", "LAST", "CHANGE",
                                   "ACTIONS", "PEERS"]  # fmt: skip
    main, dropbear, acme = lines[head + 1 : head + 4]
    assert main.split()[:4] == ["main", "/etc/config", "syncing", "12"]
    assert main.endswith("192.168.1.2 synced, 192.168.1.3 synced")
    assert dropbear.split()[:5] == ["dropbear", "/etc/dropbear", "syncing", "2", "-"]
    assert "restart dropbear" in dropbear and dropbear.endswith(
        "192.168.1.2 absent, 192.168.1.3 v1"
    )
    assert acme.split()[2] == "waiting" and "reload uhttpd" in acme
    assert "acme waits: /etc/acme does not exist" in lines
    assert lines[-1].endswith("192.168.1.2 [dropbear]: ok; received 1, sent 0, deleted 0"
                              " (dropbear_rsa_host_key)")  # fmt: skip


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def test_owsync_status_of_a_daemon_with_a_group(tmp_path, daemons):
    d = daemons("d")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "dropbear_rsa_host_key").write_text("k\n")
    d.configure([f"127.0.0.1:{free_port()}"], poll=600,
                extra=f"group.keys.dir={keys}\ngroup.keys.include=*\n"
                "group.keys.restart=dropbear\n")  # fmt: skip
    d.start()
    if "groups" not in d.status():
        pytest.skip("the daemon's status has no groups in this tree (branch gengine)")
    assert wait_for(lambda: d.status()["groups"][1].get("files") == 1, 10), d.text()
    r = d.ctl("status")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("keys "))
    assert row.split()[:4] == ["keys", str(keys), "syncing", "1"], r.stdout
    assert "restart dropbear" in row


def test_restore_group_colon_id_through_the_running_daemon(tmp_path, daemons):
    """The daemon owns the group's directory: restore GROUP:ID goes through it
    (needs branches gconfig and gengine)."""
    d = daemons("d")
    keys = tmp_path / "keys"
    keys.mkdir()
    d.configure([f"127.0.0.1:{free_port()}"], poll=600,
                extra=f"group.keys.dir={keys}\ngroup.keys.include=*\n")  # fmt: skip
    d.start()
    if "groups" not in d.status():
        pytest.skip("the daemon's status has no groups in this tree (branch gengine)")
    (keys / "id_host_key").write_text("one\n")
    assert wait_for(lambda: d.status()["groups"][1].get("files") == 1, 10), d.text()
    (keys / "id_host_key").write_text("two\n")  # an edit here keeps what it replaced

    def kept():
        out = json.loads(d.ctl("versions", "--json", "-c", str(d.conf)).stdout)["versions"]
        return [v for v in out if v["group"] == "keys"]

    assert wait_for(kept, 10), d.text()
    (v,) = kept()
    r = d.ctl("restore", f"keys:{v['id']}", "-c", str(d.conf))
    assert r.returncode == 0, r.stderr + d.text()
    assert r.stdout == f"restored id_host_key from version keys:{v['id']}\n"
    assert (keys / "id_host_key").read_text() == "one\n"
