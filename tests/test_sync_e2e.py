"""Two real owsync processes over loopback: a listener and `owsync connect`."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from conftest import KEY, summary

NOW = time.time()


def test_new_files_both_ways(nodes):
    a, b = nodes("a").listen(), nodes("b")
    a.write("dhcp", "config dnsmasq\n")
    b.write("firewall", "config defaults\n")
    r = b.sync_ok(a)
    assert a.files() == b.files() == {"dhcp": b"config dnsmasq\n", "firewall": b"config defaults\n"}
    s = summary(r)
    assert (s["received"], s["sent"], s["deleted"]) == (1, 1, 0)
    assert s["bytes"] > 0


def test_nothing_changed_transfers_nothing(nodes):
    a, b = nodes("a").listen(), nodes("b")
    for i in range(5):
        a.write(f"f{i}", f"content {i}")
    b.sync_ok(a)
    s = summary(b.sync_ok(a))
    assert (s["received"], s["sent"], s["deleted"]) == (0, 0, 0)


def test_modification_propagates_with_its_mtime(nodes):
    a, b = nodes("a").listen(), nodes("b")
    a.write("dhcp", "v1", mtime=NOW - 100)
    b.sync_ok(a)
    p = a.write("dhcp", "v2", mtime=NOW - 10)
    b.sync_ok(a)
    assert (b.dir / "dhcp").read_bytes() == b"v2"
    # the received file carries the writer's mtime, not its arrival time
    assert (b.dir / "dhcp").stat().st_mtime_ns // 1_000_000 == p.stat().st_mtime_ns // 1_000_000


def test_deletion_through_tombstone_and_resurrection(nodes):
    a, b = nodes("a").listen(), nodes("b")
    a.write("old.txt", "soon gone")
    b.sync_ok(a)
    assert (b.dir / "old.txt").exists()
    (a.dir / "old.txt").unlink()
    s = summary(b.sync_ok(a))
    assert s["deleted"] == 1 and not (b.dir / "old.txt").exists()
    db = json.loads(b.db.read_text())["files"]["old.txt"]
    assert db["deleted"] is True and db["hash"] is None
    # the deletion survives more sessions, in both directions
    b.sync_ok(a)
    assert not (a.dir / "old.txt").exists() and not (b.dir / "old.txt").exists()
    # re-created on B later: it comes back on A
    b.write("old.txt", "back again")
    b.sync_ok(a)
    assert (a.dir / "old.txt").read_bytes() == b"back again"


def test_a_deletion_is_told_on_by_a_node_that_never_had_the_file(nodes):
    """B learns of A's deletion of f without ever having had f; C, which
    still holds its older copy and has not heard of the deletion, then syncs
    with B alone: the copy loses to the deletion there (it does not come
    back to B), and B tells C of it."""
    a, b, c = nodes("a").listen(), nodes("b").listen(), nodes("c")
    a.write("f", "old copy", mtime=NOW - 100)
    c.sync_ok(a)
    (a.dir / "f").unlink()
    b.sync_ok(a)
    tomb = json.loads(b.db.read_text())["files"]["f"]
    assert tomb["deleted"] is True and tomb["hash"] is None
    s = summary(c.sync_ok(b))
    assert (s["sent"], s["deleted"]) == (0, 1)
    assert not (b.dir / "f").exists() and not (c.dir / "f").exists()
    c.sync_ok(a)
    assert not (a.dir / "f").exists()


def test_resurrected_with_an_old_mtime_still_wins(nodes):
    """A file restored with a preserved old mtime must not be deleted by the tombstone."""
    a, b = nodes("a").listen(), nodes("b")
    a.write("x", "one")
    b.sync_ok(a)
    (a.dir / "x").unlink()
    b.sync_ok(a)
    b.write("x", "restored", mtime=NOW - 86400)  # like cp -p from a backup
    b.sync_ok(a)
    assert (a.dir / "x").read_bytes() == b"restored"
    assert (b.dir / "x").read_bytes() == b"restored"


@pytest.mark.parametrize(
    ("a_edit", "b_edit", "winner"),
    [(("A's edit", 50), ("B's later edit", 20), "B's later edit"),
     (("A's later edit", 20), ("B's edit", 50), "A's later edit")],
    ids=["newer_remote_wins", "newer_local_wins"],
)  # fmt: skip
def test_lww_the_newer_edit_wins(nodes, a_edit, b_edit, winner):
    """Both edit a synced file (content, seconds ago); B connects: the later edit wins."""
    a, b = nodes("a").listen(), nodes("b")
    a.write("f", "base", mtime=NOW - 100)
    b.sync_ok(a)
    a.write("f", a_edit[0], mtime=NOW - a_edit[1])
    b.write("f", b_edit[0], mtime=NOW - b_edit[1])
    b.sync_ok(a)
    assert a.files() == b.files() == {"f": winner.encode()}


def test_lww_tie_broken_by_hash(nodes):
    import hashlib

    a, b = nodes("a").listen(), nodes("b")
    t = NOW - 30
    a.write("f", "alpha", mtime=t)
    b.write("f", "bravo", mtime=t)
    b.sync_ok(a)
    winner = max([b"alpha", b"bravo"], key=lambda d: hashlib.sha256(d).hexdigest())
    assert a.files() == b.files() == {"f": winner}


def test_excludes_and_no_include(nodes):
    a = nodes("a", extra=["-i", "*", "-e", "network", "-e", "*.bak"]).listen()
    b = nodes("b", extra=["-i", "*", "-e", "network", "-e", "*.bak"])
    a.write("network", "A's own")
    a.write("dhcp", "shared")
    a.write("sub/x.bak", "backup")
    b.write("network", "B's own")
    b.sync_ok(a)
    assert b.files() == {"network": b"B's own", "dhcp": b"shared"}
    assert (a.dir / "network").read_bytes() == b"A's own"
    # no include pattern: nothing syncs, and it says so
    c = nodes("c", extra=["-e", "nothing"], include_all=False)
    r = c.connect(a)
    assert r.returncode == 0 and "no include pattern" in r.stderr
    assert c.files() == {}


def test_subdirectories_binary_and_modes(nodes):
    a, b = nodes("a").listen(), nodes("b")
    blob = bytes(range(256)) * 64 + b"\x00\xff"
    a.write("deep/er/still/blob.bin", blob)
    hook = a.write("hooks/run.sh", "#!/bin/sh\necho hi\n")
    os.chmod(hook, 0o755)
    secret = a.write("secret.conf", "k")
    os.chmod(secret, 0o600)
    b.sync_ok(a)
    assert b.files() == a.files()
    assert stat.S_IMODE((b.dir / "hooks/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((b.dir / "secret.conf").stat().st_mode) == 0o600
    assert stat.S_IMODE((b.dir / "deep/er/still/blob.bin").stat().st_mode) == 0o644


def test_special_characters_and_long_names(nodes):
    a, b = nodes("a").listen(), nodes("b")
    names = [
        "with space.conf",
        "ünïcødé-ファイル",
        "quote'\"and\\backslash",
        "semi;colon&amp$(dollar)",
        "x" * 255,
        "/".join(["d" * 200] * 3) + "/leaf",
        "new\nline",
        "my.dbx",
        "tab\there.tmp",
    ]
    for i, n in enumerate(names):
        a.write(n, f"content {i}")
    b.sync_ok(a)
    assert b.files() == a.files()
    assert len(b.files()) == len(names)


def test_hidden_paths_are_not_synced(nodes):
    a, b = nodes("a").listen(), nodes("b")
    a.write(".dhcp.swp", "editor swap")
    a.write(".git/config", "x")
    a.write("sub/.hidden", "x")
    a.write("visible", "y")
    b.sync_ok(a)
    assert b.files() == {"visible": b"y"}


def test_thousand_files(nodes):
    a, b = nodes("a").listen(), nodes("b")
    for i in range(1000):
        a.write(f"d{i % 10}/f{i:04d}", os.urandom(64) + str(i).encode())
    s = summary(b.sync_ok(a))
    assert s["received"] == 1000
    assert b.files() == a.files()
    s = summary(b.sync_ok(a))
    assert s["received"] == s["sent"] == 0


def test_plain_mode(nodes):
    a = nodes("a", key=None, extra=["-p", "-i", "*"]).listen()
    b = nodes("b", key=None, extra=["-p", "-i", "*"])
    a.write("dhcp", "plain text")
    b.sync_ok(a)
    assert b.files() == {"dhcp": b"plain text"}


def test_encrypted_without_key_is_an_error(nodes):
    b = nodes("b", key=None)
    r = b.run("connect", "127.0.0.1:1", *b.opts())
    assert r.returncode == 1
    assert "no encryption key" in r.stderr and "owsync genkey" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_wrong_key_fails_cleanly_on_both_sides(nodes):
    a = nodes("a").listen()
    b = nodes("b", key="00" * 32)
    a.write("dhcp", "secret")
    r = b.connect(a)
    assert r.returncode == 1
    assert "wrong key" in r.stderr
    assert "Traceback" not in r.stderr
    assert b.files() == {}
    log = a.wait_log("wrong key")
    assert "wrong key" in log and "Traceback" not in log


def test_plain_against_encrypted_fails(nodes):
    a = nodes("a").listen()
    b = nodes("b", key=None, extra=["-p", "-i", "*"])
    a.write("dhcp", "x")
    r = b.connect(a)
    assert r.returncode == 1 and b.files() == {}


def test_clock_skew_aborts_without_change(nodes):
    a = nodes("a").listen()
    b = nodes("b")
    a.write("dhcp", "from a")
    b.write("firewall", "from b")
    r = b.connect(a, clock_offset=90)
    assert r.returncode == 1
    assert "clock skew" in r.stderr
    assert b.files() == {"firewall": b"from b"}
    assert a.files() == {"dhcp": b"from a"}
    assert not b.db.exists()
    # within the tolerance it syncs
    r = b.connect(a, clock_offset=30)
    assert r.returncode == 0, r.stderr


def test_corrupt_database_is_rebuilt(nodes):
    a, b = nodes("a").listen(), nodes("b")
    a.write("dhcp", "x")
    b.sync_ok(a)
    b.db.write_text('{"files": {"dhcp": {"hash": 12')  # truncated
    b.write("new", "y")
    r = b.connect(a)
    assert r.returncode == 0, r.stderr
    assert "corrupt" in r.stderr
    assert json.loads(b.db.read_text())["files"].keys() == {"dhcp", "new"}
    assert a.files() == b.files()


def test_database_inside_the_synced_directory(nodes, tmp_path):
    a = nodes("a").listen()
    b = nodes("b")
    b.db = b.dir / "owsync.db"  # lives among the files it describes
    b.write("dhcp", "x")
    b.sync_ok(a)
    b.sync_ok(a)
    assert set(a.files()) == {"dhcp"}
    assert "owsync.db" not in json.loads(b.db.read_text())["files"]


def test_symlinks_are_neither_followed_nor_synced(nodes, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not leak")
    a, b = nodes("a").listen(), nodes("b")
    os.symlink(outside, a.dir / "linkdir")
    os.symlink(outside / "secret", a.dir / "linkfile")
    a.write("real", "ok")
    b.sync_ok(a)
    assert b.files() == {"real": b"ok"}


def test_config_file_and_key_from_it(nodes, tmp_path):
    conf = tmp_path / "b.conf"
    a = nodes("a").listen()
    b = nodes("b", key=None)
    conf.write_text(
        f"# node b\nsync_dir={b.dir}\ndatabase={b.db}\nencryption_key={KEY}\n"
        f"include=*\nexclude=network\nbogus_key=1\nport=notanumber\n"
    )
    a.write("dhcp", "x")
    a.write("network", "n")
    # a bad value is one error line naming the file, the line, the key and the range
    r = b.run("connect", f"127.0.0.1:{a.port}", "-c", str(conf))
    assert r.returncode == 1 and r.stderr.splitlines() == [
        f"owsync: error: {conf}:8: bad value for port: 'notanumber'"
        " (expected a whole number in 1..65535)"
    ]
    assert b.files() == {}
    # an unknown key is a warning, as in owsync 1.2.0
    conf.write_text(conf.read_text().replace("port=notanumber\n", ""))
    r = b.run("connect", f"127.0.0.1:{a.port}", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    assert "unknown key 'bogus_key'" in r.stderr
    assert b.files() == {"dhcp": b"x"}
    assert KEY not in r.stderr and KEY not in r.stdout


def test_database_of_another_directory_infers_no_deletions(nodes, tmp_path):
    """Pointing a node at another directory with the same database must not delete
    the peers' files: the database says which directory it describes."""
    a, b = nodes("a").listen(), nodes("b")
    a.write("dhcp", "x")
    b.write("firewall", "y")
    b.sync_ok(a)
    assert json.loads(b.db.read_text())["root"] == os.path.realpath(b.dir)
    b.dir = tmp_path / "elsewhere"
    b.dir.mkdir()
    r = b.sync_ok(a)
    assert "describes" in r.stderr
    assert a.files() == {"dhcp": b"x", "firewall": b"y"}
    assert b.files() == a.files()
