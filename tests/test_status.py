"""The status model (owsync/status.py) and `owsync status`'s text, from fake
workers and session results: which protocol each peer spoke, and the policy
``min_protocol``."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from conftest import DaemonNode, tracked, wait_for

from owsync.cli import format_status
from owsync.core.peer import Peer
from owsync.service import status
from owsync.service.config import Config
from owsync.service.context import SessionResult


def result(peer="192.168.1.2", ok=True, protocol=2, **kw):
    fields = dict(peer=peer, ok=ok, error="" if ok else "peer closed the connection",
                  received=1, sent=0, deleted=0, bytes=10, seconds=0.1, changed=["dhcp"],
                  removed=[], conflicts=[], protocol=protocol)  # fmt: skip
    fields.update(kw)
    return SimpleNamespace(**fields)


def worker(last, address="192.168.1.2"):
    return SimpleNamespace(peer=Peer(address, None, None, address), state="idle", last=last,
                           last_attempt=1.0, last_success=1.0 if last and last.ok else None,
                           retry_at=None, failures=0)  # fmt: skip


def test_a_peer_row_says_which_protocol_its_last_session_spoke():
    assert status.peer_view(worker(result(protocol=2)))["protocol"] == 2
    assert status.peer_view(worker(result(protocol=1)))["protocol"] == 1
    # failed before the Hellos were exchanged, never synced, or a result without the field
    assert status.peer_view(worker(result(ok=False, protocol=None)))["protocol"] is None
    assert status.peer_view(worker(None))["protocol"] is None
    old = result()
    del old.protocol
    assert status.peer_view(worker(old))["protocol"] is None


def test_history_entries_carry_the_protocol():
    h = status.SessionHistory()
    h.add(result(protocol=1), "incoming", [], now=1.0)  # named by incoming_name already
    h.add(result(peer="10.0.0.3", protocol=2), "outgoing", [], now=2.0)
    h.add(result(peer="10.0.0.4", ok=False, protocol=None), "outgoing", [], now=3.0)
    assert [(e["peer"], e["protocol"]) for e in h.entries()] == [
        ("10.0.0.4", None), ("10.0.0.3", 2), ("192.168.1.2", 1)]  # fmt: skip


def test_a_session_result_shows_as_lists_in_the_history_and_the_control_reply():
    r = SessionResult(peer="10.0.0.5", ok=True, received=1, deleted=1, changed=("dhcp", "old"),
                      removed=("old",), conflicts=("dhcp",), protocol=2)  # fmt: skip
    h = status.SessionHistory()
    h.add(r, "outgoing", [], now=1.0)
    (e,) = h.entries()
    assert (e["arrived"], e["removed"], e["conflicts"]) == (["dhcp"], ["old"], ["dhcp"])
    assert all(type(e[k]) is list for k in ("arrived", "removed", "conflicts"))
    assert r.as_dict()["conflicts"] == ["dhcp"] and type(r.as_dict()["conflicts"]) is list


def test_the_snapshot_shows_the_minimum_protocol(tmp_path):
    for wanted in (1, 2):
        cfg = Config(sync_dir=str(tmp_path), database=str(tmp_path / "db"), min_protocol=wanted)
        d = SimpleNamespace(
            cfg=cfg, started=time.time(), cipher=SimpleNamespace(encrypted=False), serving=None,
            workers={"192.168.1.2": worker(result(protocol=1))}, history=status.SessionHistory(),
            record_counts=lambda: (0, 0),
        )  # fmt: skip
        st = status.snapshot(d)
        assert st["min_protocol"] == wanted
        assert st["peers"][0]["protocol"] == 1


def _st(**kw):
    st = {"version": "2.0.0", "uptime": 754, "sync_dir": "/etc/config", "encryption": True,
          "files": 3, "tombstones": 0, "min_protocol": 1, "history": [],
          "peers": [
              {"address": "192.168.1.2", "state": "idle", "last_success": None,
               "last_result": "ok", "received": 1, "sent": 0, "deleted": 0,
               "consecutive_failures": 0, "next_retry": None, "protocol": 2},
              {"address": "192.168.1.3", "state": "idle", "last_success": None,
               "last_result": "ok", "received": 0, "sent": 0, "deleted": 0,
               "consecutive_failures": 0, "next_retry": None, "protocol": 1},
              {"address": "192.168.1.4", "state": "backing off", "last_success": None,
               "last_result": "cannot connect: refused", "received": 0, "sent": 0,
               "deleted": 0, "consecutive_failures": 2, "next_retry": None},
          ]}  # fmt: skip
    st.update(kw)
    return st


def test_owsync_status_text_has_a_protocol_column():
    lines = format_status(_st()).splitlines()
    assert "minimum protocol" not in lines[1]
    header = lines[1].split()
    assert header[header.index("RESULT") + 1] == "PROTO"
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert "  v2  " in rows["192.168.1.2"]
    assert "  v1 (1.2.0)  " in rows["192.168.1.3"]
    assert "refused  -  " in rows["192.168.1.4"]  # never got as far as the Hellos


def test_owsync_status_text_states_a_minimum_protocol_of_2():
    lines = format_status(_st(min_protocol=2)).splitlines()
    assert lines[1] == "minimum protocol 2: peers that speak only v1 (owsync 1.2.0) are refused"
    # a daemon older than these fields: no line, and "-" in the column
    old = _st()
    del old["min_protocol"]
    for p in old["peers"]:
        p.pop("protocol", None)
    text = format_status(old)
    assert "minimum protocol" not in text and "v1" not in text and "v2" not in text


def _legacy_shape(st: dict) -> dict:
    """The fields of owsync 1.2.0's rpcd plugin and their JSON types."""
    return {
        "status": st["status"],
        "pid": type(st["pid"]),
        "enabled": st["enabled"],
        "uptime": type(st["uptime"]),
        "database": sorted(st["database"]),
        "config": sorted(st["config"]),
    }


@pytest.fixture
def daemons(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def test_status_carries_the_fields_of_owsync_1_2_0s_plugin(daemons):
    """`ubus call owsync status` of 1.2.0's package (an rpcd shell plugin) gave
    status, pid, enabled, uptime, database{path,last_modified} and
    config{encryption_enabled,peer_count,sync_dir}: a real daemon's status has
    them, with the values 1.2.0's plugin would have found."""
    a, b = daemons("a"), daemons("b")
    a.configure([b.addr, "127.0.0.1:9"])
    b.configure([a.addr])
    b.conf.write_text(
        "".join(x for x in b.conf.read_text().splitlines(True) if "encryption_key" not in x)
        + "plain_mode=1\n"
    )
    a.start()
    st = a.status()
    assert _legacy_shape(st) == {
        "status": "RUNNING", "pid": int, "enabled": True, "uptime": int,
        "database": ["last_modified", "path"],
        "config": ["encryption_enabled", "peer_count", "sync_dir"],
    }  # fmt: skip
    assert st["pid"] == a.proc.pid and st["uptime"] >= 0
    assert st["database"]["path"] == str(a.db)
    assert st["config"] == {"encryption_enabled": True, "peer_count": 2, "sync_dir": str(a.dir)}
    (a.dir / "dhcp").write_text("config dnsmasq\n")
    assert wait_for(lambda: a.db.exists() and a.status()["database"]["last_modified"] > 0, 10)
    assert a.status()["database"]["last_modified"] == int(a.db.stat().st_mtime)
    b.start()
    assert b.status()["config"] == {"encryption_enabled": False, "peer_count": 1,
                                    "sync_dir": str(b.dir)}  # fmt: skip


def test_an_incoming_peer_is_named_as_configured_never_by_its_ephemeral_port():
    peers = [Peer("192.168.1.2", None, None, "192.168.1.2"),
             Peer("10.0.0.5", 4400, "10.0.0.1", "10.0.0.5:4400,10.0.0.1"),
             Peer("127.0.0.1", 5001, None, "127.0.0.1:5001"),
             Peer("127.0.0.1", 5002, None, "127.0.0.1:5002"),
             Peer("fe80::2", None, None, "fe80::2")]  # fmt: skip

    def name(label, port=None):
        return status.incoming_name(label, peers, 4321, port)

    # one configured peer at that address: the one it is, as written (1.2.0 says no port)
    assert name("192.168.1.2:58481") == "192.168.1.2"
    assert name("10.0.0.5:40000") == "10.0.0.5:4400,10.0.0.1"
    assert name("[fe80::0:2]:40000") == "fe80::2"  # the same address, written otherwise
    # several at one address: the port its live offer says tells them apart
    assert name("127.0.0.1:58481") == "127.0.0.1"
    assert name("127.0.0.1:58481", 5002) == "127.0.0.1:5002"
    # a port that none of them listens on is none of them (a peer without a port: ours)
    assert name("192.168.1.2:58481", 4321) == "192.168.1.2"
    assert name("192.168.1.2:58481", 4999) == "192.168.1.2"
    assert status.match_peer("192.168.1.2:58481", peers, 4321, 4999) is None
    assert status.match_peer("192.168.1.2:58481", peers, 4321, 4321) is peers[0]
    # not configured: its address alone
    assert name("192.168.1.9:58481") == "192.168.1.9" and name("[::1]:5") == "::1"
