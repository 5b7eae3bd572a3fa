"""keepalived's VRRP transitions, through the control socket (`owsync vrrp`),
between two real daemons on a live link: the role and since when in both
statuses, the peer's roles carried over the link, a reconcile with every
peer; bad input refused in one line.  tests/test_failover.py drives the same
from OpenWrt's hotplug-call and from a real keepalived."""

from __future__ import annotations

import time

import pytest
from conftest import DaemonNode, tracked, wait_for

from owsync.cli import format_status
from owsync.core.live import Role
from owsync.service.vrrp import keepalived_roles


@pytest.fixture
def node(tmp_path):
    yield from tracked(tmp_path, DaemonNode)


def _linked(a: DaemonNode, b: DaemonNode) -> bool:
    return all(n.status()["peers"][0]["live"] for n in (a, b))


def test_a_transition_shows_in_both_statuses_and_reconciles_every_peer(node):
    a, b = node("a"), node("b")
    a.configure([b.addr]).start()
    b.configure([a.addr]).start()
    assert wait_for(lambda: _linked(a, b), 15), a.text() + b.text()
    assert a.status()["vrrp"] == {} and b.status()["peers"][0].get("vrrp") is None
    before = a.status()["peers"][0]["live"]["reconciles"]
    began = int(time.time())

    r = a.ctl("vrrp", "VI_LAN", "NOTIFY_MASTER")  # keepalived's OpenWrt spelling
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("VI_LAN: MASTER since ") and b.addr in r.stdout

    def mine():
        return a.status()["vrrp"].get("VI_LAN", {})

    assert wait_for(lambda: mine().get("reconciled"), 10), a.text()
    st = a.status()
    here = st["vrrp"]["VI_LAN"]
    assert here["role"] == "MASTER" and began <= here["since"] <= time.time()
    assert here["reconciling"] is False and here["reconciled"] >= here["since"]
    # the reconcile ran over the live link after the transition (by time, not by
    # count: a link that gives way to a duplicate starts its counters again)
    link = st["peers"][0]["live"]
    assert link["reconciles"] > before or link["connected_since"] >= here["since"], link
    assert link["last_reconcile"] >= here["since"], link
    assert "VRRP instance VI_LAN: MASTER" in a.text()
    assert "reconciled with 1 of 1 peer(s)" in a.text()
    # the peer hears of it over the live link
    # (waited for as a whole: a link that gives way to a duplicate just after
    # link-up is replaced by one that hears the roles again at its own start)
    told = {"VI_LAN": {"role": "MASTER", "since": here["since"]}}
    assert wait_for(lambda: b.status()["peers"][0].get("vrrp") == told, 10), b.text()
    # ha-cluster's spelling; the same role again keeps its since
    assert a.ctl("vrrp", "VI_LAN", "MASTER").returncode == 0
    assert a.ctl("vrrp", "VI_WAN", "BACKUP").returncode == 0
    assert wait_for(lambda: "VI_WAN" in (b.status()["peers"][0].get("vrrp") or {}), 10)
    st = a.status()
    assert st["vrrp"]["VI_LAN"]["since"] == here["since"]
    assert st["vrrp"]["VI_WAN"]["role"] == "BACKUP"
    text = format_status(st)
    assert "VRRP here: VI_LAN MASTER since " in text and "VI_WAN BACKUP since " in text
    assert f"VRRP at {a.addr}: VI_LAN MASTER" in format_status(b.status())
    # keepalived stopped an instance: it has no role here, nor at the peer, any more
    r = a.ctl("vrrp", "VI_WAN", "NOTIFY_STOP")
    assert r.returncode == 0 and "VI_WAN: stopped" in r.stdout, r.stderr
    assert set(a.status()["vrrp"]) == {"VI_LAN"}
    assert wait_for(lambda: set(b.status()["peers"][0]["vrrp"]) == {"VI_LAN"}, 10)


def test_a_link_that_comes_up_later_hears_the_roles(node):
    a, b = node("a"), node("b")
    a.configure([b.addr]).start()
    assert a.ctl("vrrp", "VI_1", "fault").returncode == 0  # no peer up yet
    assert wait_for(lambda: a.status()["vrrp"]["VI_1"]["reconciled"], 30), a.text()
    b.configure([a.addr]).start()
    assert wait_for(lambda: b.status()["peers"][0].get("vrrp"), 20), b.text()
    assert b.status()["peers"][0]["vrrp"]["VI_1"]["role"] == "FAULT"


@pytest.mark.parametrize(
    "args, why",
    [
        (("VI_1", "BOGUS"), "role must be MASTER, BACKUP, FAULT or STOP"),
        (("", "MASTER"), "instance must be"),
        (("x" * 65, "MASTER"), "instance must be"),
        (("VI_1",), "vrrp takes an INSTANCE and a ROLE"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(node, args, why):
    a = node("a")
    a.configure(["127.0.0.1:9"]).start()
    r = a.ctl("vrrp", *args)
    assert r.returncode != 0 and why in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert a.status()["vrrp"] == {}
    assert a.proc.poll() is None


def test_the_roles_openwrts_keepalived_recorded_are_read_as_they_are(tmp_path):
    """/var/run/keepalived/NAME_TYPE/{STATUS,TIME}, as OpenWrt's keepalived
    package writes them: an instance's last ACTION (either spelling) and its
    time; a stopped instance, a group, and what cannot be read are left out."""
    for entry, status, when in (("VI_LAN_INSTANCE", "NOTIFY_MASTER\n", "1795600000\n"),
                                ("WAN_INSTANCE", "BACKUP\n", "1795600001\n"),
                                ("VI_OFF_INSTANCE", "NOTIFY_STOP\n", "1795600002\n"),
                                ("G1_GROUP", "NOTIFY_MASTER\n", "1795600003\n"),
                                ("BAD_INSTANCE", "NOTIFY_MASTER\n", "soon\n"),
                                ("ODD_INSTANCE", "NOTIFY_UNKNOWN\n", "1\n")):  # fmt: skip
        (tmp_path / entry).mkdir()
        (tmp_path / entry / "STATUS").write_text(status)
        (tmp_path / entry / "TIME").write_text(when)
    (tmp_path / "HALF_INSTANCE").mkdir()  # no files yet
    assert keepalived_roles(str(tmp_path)) == {
        "VI_LAN": Role("MASTER", 1795600000),
        "WAN": Role("BACKUP", 1795600001),
    }
    assert keepalived_roles(str(tmp_path / "absent")) == {}
