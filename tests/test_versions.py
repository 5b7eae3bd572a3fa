"""The version store: nothing a session or a local edit replaces is gone.

Real `owsync listen` / `connect` processes and daemons on loopback, real files;
the store is read through `owsync versions` (and its JSON), restored through
`owsync restore`, from the shell as an admin types it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time

import pytest
from conftest import DaemonNode, Node, base_env, owsync_cmd, wait_for

from owsync.io.versions import Limits, prune


def versions(node: Node, *args: str) -> list[dict]:
    r = node.run("versions", *args, *node.opts(), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["versions"]


def store_files(node: Node) -> list[str]:
    root = node.db.with_suffix(".versions")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def ab(nodes):
    a, b = nodes("a"), nodes("b")
    a.write("firewall", "config zone lan\n", mtime=time.time() - 600)
    a.write("dhcp", "config dnsmasq\n", mtime=time.time() - 600)
    a.listen()
    b.sync_ok(a)
    return a, b


def test_an_overwrite_and_a_deletion_from_a_peer_each_leave_a_restorable_version(ab):
    a, b = ab
    a.write("firewall", "config zone lan\nconfig zone wan\n")
    (a.dir / "dhcp").unlink()
    b.sync_ok(a)
    assert not (b.dir / "dhcp").exists()
    kept = {v["path"]: v for v in versions(b)}
    assert kept["firewall"]["reason"] == "replaced"
    assert kept["firewall"]["peer"] == f"127.0.0.1:{a.port}"
    assert kept["dhcp"]["reason"] == "deleted"
    assert kept["dhcp"]["hash"] == hashlib.sha256(b"config dnsmasq\n").hexdigest()

    r = b.run("restore", "dhcp", *b.opts())
    assert r.returncode == 0, r.stderr
    assert "restored dhcp" in r.stdout
    assert (b.dir / "dhcp").read_text() == "config dnsmasq\n"
    r = b.run("restore", "firewall", str(kept["firewall"]["id"]), *b.opts())
    assert r.returncode == 0, r.stderr
    assert (b.dir / "firewall").read_text() == "config zone lan\n"
    # the restores are new local writes: they reach the peer, and win there
    b.sync_ok(a)
    assert (a.dir / "dhcp").read_text() == "config dnsmasq\n"
    assert (a.dir / "firewall").read_text() == "config zone lan\n"
    assert {v["reason"] for v in versions(a)} >= {"replaced"}


def test_a_conflict_is_reported_on_the_losing_side_and_restorable(ab):
    a, b = ab
    b.write("firewall", "written on b\n", mtime=time.time() - 5)  # before a's write
    a.write("firewall", "written on a\n", mtime=time.time())
    r = b.sync_ok(a)
    assert f"conflict: firewall, written here, lost to a newer write from 127.0.0.1:{a.port}" in (
        r.stderr
    )
    assert (b.dir / "firewall").read_text() == "written on a\n"
    conflicts = [v for v in versions(b) if v["reason"] == "conflict"]
    assert [v["path"] for v in conflicts] == ["firewall"]
    assert not [v for v in versions(a) if v["reason"] == "conflict"]  # a's write won

    r = b.run("diff", str(conflicts[0]["id"]), *b.opts())
    assert "-written on b" in r.stdout and "+written on a" in r.stdout
    assert b.run("restore", "firewall", *b.opts()).returncode == 0
    b.sync_ok(a)
    assert (a.dir / "firewall").read_text() == "written on b\n"  # newer now: it wins


def test_a_local_edit_keeps_the_version_it_replaced(ab):
    a, b = ab
    (b.dir / "firewall").write_text("edited by hand on b\n")
    (b.dir / "dhcp").unlink()
    b.sync_ok(a)
    kept = {v["path"]: v for v in versions(b)}
    assert kept["firewall"]["reason"] == "edited" and kept["firewall"]["peer"] == ""
    assert kept["dhcp"]["reason"] == "deleted" and kept["dhcp"]["peer"] == ""
    assert b.run("restore", "firewall", *b.opts()).returncode == 0
    assert (b.dir / "firewall").read_text() == "config zone lan\n"


def test_identical_contents_are_stored_once_and_the_store_is_never_synced(nodes, tmp_path):
    # the store inside the synced directory, with include '*': still never synced
    inside = ["--db", str(tmp_path / "a" / "state" / "a.db")]
    a = nodes("a", extra=inside)
    b = nodes("b")
    same = "the same content\n"
    for i in range(5):
        a.write(f"f{i}", f"v1 {i}\n", mtime=time.time() - 600)
    a.listen()
    b.sync_ok(a)
    for i in range(5):
        b.write(f"f{i}", same)
    a.stop()
    a.log.write_text("")
    a.listen()
    b.sync_ok(a)
    assert all((a.dir / f"f{i}").read_text() == same for i in range(5))
    store = tmp_path / "a" / "state" / "a.versions"
    objects = [p for p in store.rglob("*") if p.parent.parent.name == "objects"]
    digests = {p.name for p in objects}
    assert hashlib.sha256(same.encode()).hexdigest() in digests  # the bases: stored once
    assert len(objects) == len(digests) == 6, sorted(digests)  # 5 old versions, 1 base
    assert sorted(b.files()) == [f"f{i}" for i in range(5)]  # nothing of a's store
    assert not (b.dir / "state").exists()


def with_conf(node: Node, text: str) -> Node:
    """Give ``node`` a key=value file (the store's limits are no options)."""
    conf = node.dir.parent / f"{node.name}.conf"
    conf.write_text(f"sync_dir={node.dir}\ndatabase={node.db}\ninclude=*\n{text}")
    node.extra = ["-c", str(conf)]
    return node


def test_limits_prune_the_oldest_first(nodes):
    a = nodes("a")
    b = with_conf(nodes("b"), "versions_keep=3\nversions_max_size=4096\n")
    a.listen()
    for n in range(6):
        a.write("f", f"version {n}\n", mtime=time.time() - 100 + n)
        b.sync_ok(a)
    kept = versions(b, "f")
    assert [v["size"] for v in kept] == [len("version 4\n")] * 3
    assert [v["id"] for v in kept] == sorted((v["id"] for v in kept), reverse=True)
    contents = [b.run("diff", str(v["id"]), *b.opts()).stdout for v in kept]
    assert "-version 4" in contents[0] and "-version 2" in contents[2]
    # the size limit: a 3 KiB file's versions push the older ones out
    big = [os.urandom(1500).hex()[:3000] + f"{n}\n" for n in range(3)]
    for n, text in enumerate(big):
        a.write("g", text, mtime=time.time() + n)
        b.sync_ok(a)
    total = sum(v["size"] for v in {v["hash"]: v for v in versions(b)}.values())
    assert total <= 4096


def test_prune_is_oldest_first_within_each_limit():
    h = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20)]
    now = 10 * 86_400_000
    vs = [{"id": i, "path": "p" if i % 2 else "q", "hash": h[i], "kept": now - (20 - i) * 1000}
          for i in range(20)]  # fmt: skip
    sizes = {x: 100 for x in h}.get
    kept, bases = prune(vs, {"p": [h[19], False, True]}, sizes, Limits(4, 10_000, 30), now)
    assert [v["id"] for v in kept] == [12, 13, 14, 15, 16, 17, 18, 19]
    kept, bases = prune(vs, {"p": [h[0], False, True], "q": [h[1], True, True]}, sizes,
                        Limits(4, 550, 30), now)  # fmt: skip
    # base contents go first; a write made here (pending) keeps its hash
    assert [v["id"] for v in kept] == [15, 16, 17, 18, 19] and bases == {"q": [h[1], True, False]}
    old = [dict(v, kept=v["kept"] - 40 * 86_400_000) for v in vs[:5]] + vs[5:]
    kept, _ = prune(old, {}, sizes, Limits(100, 10**6, 30), now)
    assert [v["id"] for v in kept] == list(range(5, 20))


def daemon_versions(d: DaemonNode) -> list[dict]:
    r = d.ctl("versions", "--json", "-c", str(d.conf))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["versions"]


@pytest.fixture
def pair(tmp_path):
    """Daemons A and B, each the other's peer, started; stopped at the end."""
    a, b = DaemonNode(tmp_path, "a"), DaemonNode(tmp_path, "b")
    try:
        a.configure([b.addr]).start()
        b.configure([a.addr]).start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_restore_through_the_daemon_syncs_to_the_peer_and_wins(pair):
    a, b = pair
    (a.dir / "network").write_text("option ipaddr 10.0.0.1\n")
    assert wait_for(lambda: b.has("network", b"option ipaddr 10.0.0.1\n"))
    (a.dir / "network").write_text("option ipaddr 10.0.0.99  # a mistake\n")
    assert wait_for(lambda: b.has("network", b"option ipaddr 10.0.0.99  # a mistake\n"))
    kept = [v for v in daemon_versions(b) if v["path"] == "network"]
    assert kept and kept[0]["reason"] == "replaced"
    r = b.ctl("restore", "network", "-c", str(b.conf))
    assert r.returncode == 0, r.stderr
    good = b"option ipaddr 10.0.0.1\n"
    assert wait_for(lambda: a.has("network", good) and b.has("network", good))
    st = a.status()
    assert st["conflicts"] == []


def test_a_conflict_between_daemons_shows_in_status(pair):
    a, b = pair
    (a.dir / "f").write_text("base\n")
    assert wait_for(lambda: b.has("f", b"base\n"))
    a.stop()  # a partition: both write, b later
    a.log.write_text("")
    (a.dir / "f").write_text("from a\n")
    os.utime(a.dir / "f", (time.time() - 30, time.time() - 30))
    (b.dir / "f").write_text("from b\n")
    a.start()
    assert wait_for(lambda: a.has("f", b"from b\n"), timeout=20)
    st = a.status()
    assert [c["path"] for c in st["conflicts"]] == ["f"], st["conflicts"]
    assert any(e.get("conflicts") == ["f"] for e in st["history"])


def test_sigkill_while_keeping_versions_leaves_file_and_store_consistent(tmp_path):
    """A receiving connect killed at a random moment while it keeps what it
    replaces: every file is its old or its new content, every kept version's
    content matches its hash, and the next session converges."""
    rng = random.Random(7)
    for it in range(6):
        root = tmp_path / f"it{it}"
        a, b = Node(root, "a"), Node(root, "b")
        old = {f"d/f{i}": os.urandom(rng.choice([100, 50_000, 400_000])) for i in range(60)}
        new = {p: os.urandom(len(d)) for p, d in old.items()}
        for p, d in old.items():
            b.write(p, d, mtime=time.time() - 3600)
            a.write(p, new[p], mtime=time.time() - 60)
        for n in (a, b):
            with_conf(n, "versions_max_size=100000000\n")
        a.listen()
        try:
            proc = subprocess.Popen(
                owsync_cmd("connect", f"127.0.0.1:{a.port}", *b.opts()),
                env=base_env(b.key), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(rng.uniform(0.1, 0.8))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            allowed = {p: {old[p], new[p]} for p in old}
            for p, data in b.files().items():
                if "/.owsync-" in p or p.startswith(".owsync-"):
                    continue
                assert data in allowed[p], f"iteration {it}: {p} half-written"
            store = root / "b.versions"
            for obj in store.glob("objects/*/*"):
                if not obj.name.startswith(".tmp-"):
                    assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.name, obj
            if (store / "index.json").exists():
                json.loads((store / "index.json").read_text())
            b.sync_ok(a)
            assert b.files() == a.files(), f"iteration {it}"
            kept = {v["path"]: v for v in versions(b)}
            # every old content that was replaced is kept (none lost to the crash)
            for p, data in old.items():
                if p in kept:
                    assert kept[p]["hash"] == hashlib.sha256(data).hexdigest()
            assert len(kept) == len(old), f"iteration {it}: {len(kept)} of {len(old)} kept"
        finally:
            a.stop()


def test_a_conflict_is_told_even_when_no_content_fits_the_store(nodes):
    """A full store keeps a base's hash alone: a write made here that loses is still
    reported as a conflict (its content, larger than the whole store, is not kept)."""
    a = nodes("a")
    b = with_conf(nodes("b"), "versions_max_size=8\n")
    a.write("firewall", "config zone lan\n", mtime=time.time() - 600)
    a.listen()
    b.sync_ok(a)
    b.write("firewall", "written on b\n", mtime=time.time() - 5)
    a.write("firewall", "written on a\n", mtime=time.time())
    r = b.sync_ok(a)
    assert "conflict: firewall, written here, lost" in r.stderr, r.stderr
    assert versions(b) == []  # 13 bytes: more than the whole store may hold
