"""luci-app-owsync in CI: its files as LuCI reads them, its formatting logic under
Node.js, and its views rendered in headless Chromium (Debian's package, driven by
Playwright) against a stand-in for LuCI, fed by two real owsync daemons.
tests/test_luci_real.py does the same in LuCI's real runtime, opt-in.

What the stand-in supplies, and nothing more:

- In the browser (tests/luci/standin/luci-standin.js): L.require with LuCI's
  'require' directives, baseclass/view classes, E and dom.create/append/content
  with LuCI's semantics (a lone string child is innerHTML, so text from the
  daemon must go in as a text node), rpc.declare (params, expect, reject,
  RPCError on a JSON-RPC error), poll.add, ui.addNotification and
  ui.createHandlerFn as LuCI's (the button disabled and spinning until the
  handler settles), uci.load/get/sections and uci.add/set in the page's copy,
  L.hasViewPermission from the node's readonly state (?ro=1),
  String.prototype.format, an identity _(), and a form.Map that asks
  "session access" when its readonly is null and renders each option as one
  input, a GridSection as a row per section of its type (no saving to the
  router, no tabs, no widgets: save() redraws from the page's copy).
- On the server (tests/luci_standin.py): uhttpd's /ubus as LuCI meets it:
  "Object not found" for an absent object, "Access denied" from the app's own
  ACL file (an admin session with its read and write grants, a viewer with
  read alone), "Invalid parameters" for a browser-supplied ubus_rpc_session;
  luci.owsync status/sync/sync_peer relayed to the real daemon's control
  socket (absent when it does not answer), null values dropped as blobmsg
  does, its ``groups`` replaced by the test's when a test sets one;
  owsync.key info/set by running the real rpcd plugin
  (openwrt/owsync/files/usr/libexec/rpcd/owsync.key) on the test's key file; uci get from
  the test's UCI file; rc list and the luci-base grants (uci get, session
  access) fixed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import KEY, DaemonNode, free_port, tracked, wait_for
from luci_standin import StandIn

from owsync.core.crypto import fingerprint

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "luci/luci-app-owsync"
RES = APP / "htdocs/luci-static/resources"
JS = sorted(RES.rglob("*.js"))
NODE = shutil.which("node")


def test_the_app_is_laid_out_as_the_luci_feed_expects():
    assert {p.relative_to(RES).as_posix() for p in JS} == {
        "owsync/format.js", "owsync/examples.js", "view/owsync/status.js",
        "view/owsync/settings.js", "view/owsync/history.js"}  # fmt: skip
    mk = (APP / "Makefile").read_text()
    assert "include ../../luci.mk" in mk and "LUCI_DEPENDS:=+owsync +luci-base" in mk
    assert "call BuildPackage - OpenWrt buildroot signature" in mk
    assert (APP / "po/templates/owsync.pot").is_file()


def test_menu_and_acl_have_what_luci_reads():
    menu = json.loads((APP / "root/usr/share/luci/menu.d/luci-app-owsync.json").read_text())
    assert menu["admin/services/owsync"]["action"] == {"type": "firstchild"}
    for node, path in (("status", "owsync/status"), ("settings", "owsync/settings"),
                       ("history", "owsync/history")):  # fmt: skip
        entry = menu[f"admin/services/owsync/{node}"]
        assert entry["action"] == {"type": "view", "path": path} and entry["title"]
        assert (RES / "view" / f"{path}.js").is_file()
    for entry in menu.values():  # shown only to users whose ACL grants it
        assert entry["depends"]["acl"] == ["luci-app-owsync"]
    acl = json.loads((APP / "root/usr/share/rpcd/acl.d/luci-app-owsync.json").read_text())
    (group,) = acl.values()
    assert set(acl) == {"luci-app-owsync"} and group["description"]
    assert group["read"] == {
        "ubus": {
            "luci.owsync": ["status", "versions", "diff"],
            "owsync.key": ["info"],
            "rc": ["list"],
        },
        "uci": ["owsync"],
    }
    assert group["write"] == {
        "ubus": {
            "luci.owsync": ["sync", "sync_peer", "restore", "vrrp"],
            "owsync.key": ["set"],
        },
        "uci": ["owsync"],
    }
    # every object and method the views declare is granted, and nothing else
    declared = set()
    for js in JS:
        for obj, method in re.findall(r"object: '([\w.]+)',\s*method: '(\w+)'", js.read_text()):
            declared.add((obj, method))
    granted = {(o, m) for part in ("read", "write") for o, ms in group[part]["ubus"].items()
               for m in ms}  # fmt: skip
    # vrrp is for HA tooling that reports keepalived's roles through rpcd, not a view
    assert declared | {("luci.owsync", "vrrp")} == granted


def _strings(text: str) -> set[str]:
    found = set()
    for m in re.finditer(r"_\('((?:[^'\\]|\\.)*)'\)", text):
        found.add(m.group(1).replace("\\'", "'"))
    return found


def test_every_string_is_translatable_and_in_the_pot():
    pot = (APP / "po/templates/owsync.pot").read_text()
    msgids = set(re.findall(r'^msgid "(.*)"$', pot, re.M)) - {""}
    wanted = set()
    for js in JS:
        wanted |= _strings(js.read_text())
    escaped = {s.replace("\\", "\\\\").replace('"', '\\"') for s in wanted}
    assert escaped == msgids
    menu = json.loads((APP / "root/usr/share/luci/menu.d/luci-app-owsync.json").read_text())
    assert {e["title"] for e in menu.values()} <= msgids


@pytest.mark.skipif(not NODE, reason="needs Node.js (.ci/run installs Debian's nodejs)")
def test_javascript_parses_and_the_format_logic_holds_under_node(tmp_path):
    for js in JS:  # LuCI class files `return` at top level: check them as a function body
        wrapped = tmp_path / js.name
        wrapped.write_text("(function(){\n" + js.read_text() + "\n});\n")
        r = subprocess.run([NODE, "--check", str(wrapped)], capture_output=True, text=True)
        assert r.returncode == 0, f"{js}: {r.stderr}"
    r = subprocess.run([NODE, "--test", str(ROOT / "tests/luci")], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and re.search(r"^# pass [1-9]", r.stdout, re.M), r.stdout + r.stderr
    assert re.search(r"^# fail 0$", r.stdout, re.M), r.stdout


# --- the views in Chromium -------------------------------------------------------


class Site:
    """Two real daemons: A (the router whose page we look at) and its peer B.

    B names no reachable peer; A connects to it, and the two keep a live link
    over which a file written on B reaches A at once.  "Sync now" runs a
    full reconcile over that link.  A's second peer, ``dead``, is a port
    nobody listens on: A retries it with backoff, so the page has a healthy
    row and a failing one.
    """

    def __init__(self, tmp: Path, daemons) -> None:
        self.tmp = tmp
        self.a, self.b = daemons("a"), daemons("b")
        self.dead = f"127.0.0.1:{free_port()}"
        self.a.configure([self.b.addr, self.dead], poll=600)
        self.b.configure([f"127.0.0.1:{free_port()}"], poll=600)
        self.uci = tmp / "uci-owsync"
        self.uci.write_text(
            "config owsync 'main'\n\toption enabled '1'\n"
            f"\tlist peer '{self.b.addr}'\n\tlist peer '{self.dead}'\n"
            "\tlist include '*'\n\tlist exclude 'network'\n"
        )
        self.key_file = tmp / "etc-owsync" / "key"
        self.key_file.parent.mkdir()
        self.key_file.write_text(KEY + "\n")
        self.key_file.chmod(0o600)
        self.rc = {"owsync": {"start": 95, "stop": 10, "enabled": True, "running": True}}
        self.standin = StandIn(self.a.sock, self.uci, self.key_file, self.rc)
        self.errors: list[str] = []

    def page(self, browser, view: str, ro: bool = False):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.goto(f"{self.standin.url}/view/owsync/{view}" + ("?ro=1" if ro else ""))
        page.wait_for_selector(f"body[data-rendered='view.owsync.{view}']", timeout=15000)
        return page

    def screenshot(self, page, name: str) -> None:
        out = Path(os.environ.get("OWSYNC_SCREENSHOTS") or self.tmp)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"standin-{name}.png"), full_page=True)


@pytest.fixture
def site(tmp_path):
    nodes = tracked(tmp_path, DaemonNode)
    s = Site(tmp_path, next(nodes))
    s.a.start()
    s.b.start()
    yield s
    s.standin.close()
    next(nodes, None)  # stops the daemons the site started, by PID


def _row(page, addr: str):
    return page.locator(f"#owsync-peers tr[data-peer='{addr}']")


def _peer(node, addr: str) -> dict:
    return next(p for p in node.status()["peers"] if p["address"] == addr)


HOSTILE = "<img src=x id=owsync-injected>"  # a file name a peer may send; no "/" in it


def test_status_page_shows_the_daemon_peers_and_activity_and_sync_now_syncs(site, browser):
    a, b = site.a, site.b
    assert wait_for(lambda: _peer(a, b.addr).get("last_result") == "ok", 10), a.text()
    page = site.page(browser, "status")
    daemon = page.locator("#owsync-daemon").inner_text()
    assert f"Running (PID {a.proc.pid})" in daemon and str(a.dir) in daemon
    assert f"AES-256-GCM, key {fingerprint(bytes.fromhex(KEY))}" in daemon
    assert page.locator(".owsync-warning").count() == 0  # encrypted and listening
    assert page.locator("#owsync-not-enabled, #owsync-not-running").count() == 0
    row = _row(page, b.addr)
    assert "owsync-health-in-sync" in row.get_attribute("class")
    assert row.locator(".owsync-result").inner_text() == "ok"
    assert row.locator(".owsync-health").inner_text() == "In sync"
    # two owsync 2 daemons speak protocol 2; the dead peer never got as far as a Hello
    assert page.locator("#owsync-peers th").nth(5).inner_text() == "Protocol"
    assert row.locator(".owsync-protocol").inner_text() == "v2 live"
    assert _row(page, site.dead).locator(".owsync-protocol").inner_text() == "-"
    assert "Minimum protocol" not in daemon  # the default takes owsync 1.2.0 peers too
    first = _peer(a, b.addr)["last_success"]
    title = row.locator(".owsync-last-success").get_attribute("title")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", title)

    (b.dir / "dhcp").write_text("config dnsmasq\n")
    (b.dir / HOSTILE).write_text("x\n")
    # the live link brings them without a click; the page follows under its poll
    assert wait_for(lambda: a.has("dhcp", b"config dnsmasq\n") and a.has(HOSTILE), 10), a.text()
    page.wait_for_function(
        "() => /dhcp.* from /.test(document.getElementById('owsync-history').innerText)",
        timeout=15000,
    )
    # "Sync now": a full reconcile over the link, over when the row's attempt moves
    before = _peer(a, b.addr)["last_attempt"]
    button = row.locator("button.owsync-sync")
    assert button.is_enabled()
    button.click()
    assert wait_for(lambda: (_peer(a, b.addr)["last_attempt"] or 0) > before, 10), a.text()
    assert _peer(a, b.addr)["last_success"] > first
    row = _row(page, b.addr)
    row.locator("button.owsync-sync:enabled").wait_for(timeout=5000)
    assert row.locator("button.owsync-sync").inner_text() == "Sync now"
    assert "owsync-health-in-sync" in row.get_attribute("class")
    assert row.locator(".owsync-counts").inner_text() == "2 / 0 / 0"
    # a file name from a peer is text on the page, never markup
    assert HOSTILE in page.locator("#owsync-history").inner_text()
    assert page.locator("#owsync-injected").count() == 0
    site.screenshot(page, "status")
    assert site.standin.calls.count(("luci.owsync", "sync_peer", {"peer": b.addr})) == 1
    assert site.errors == []


def test_an_unreachable_peer_is_retrying_then_failing_with_its_error(site, browser):
    a = site.a
    assert wait_for(lambda: _peer(a, site.dead)["consecutive_failures"] >= 1, 10), a.text()
    page = site.page(browser, "status")
    row = _row(page, site.dead)
    health = row.get_attribute("class")
    assert "owsync-health-retrying" in health or "owsync-health-failing" in health, health
    result = row.locator(".owsync-result").inner_text()
    assert result not in ("ok", "-") and result == _peer(a, site.dead)["last_result"]
    assert row.locator(".owsync-last-success").inner_text() == "never"
    # backoff grows; from the third failure in a row the poll shows the peer as failing
    page.wait_for_selector(f"tr.owsync-health-failing[data-peer='{site.dead}']", timeout=30000)
    row = _row(page, site.dead)
    assert row.locator(".owsync-health .label").inner_text() == "Failing"
    assert int(row.locator(".owsync-failures").inner_text()) >= 3
    assert "owsync-health-in-sync" in _row(page, site.b.addr).get_attribute("class")
    assert site.errors == []


def test_a_minimum_protocol_of_2_is_shown_with_the_daemon(site, browser):
    a, b = site.a, site.b
    a.configure([b.addr, site.dead], poll=600, extra="min_protocol=2\n")
    a.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: a.status()["min_protocol"] == 2, 10), a.text()
    assert wait_for(lambda: _peer(a, b.addr).get("last_result") == "ok", 10), a.text()
    page = site.page(browser, "status")
    line = page.locator("#owsync-daemon-table tr", has_text="Minimum protocol")
    assert line.locator("td").nth(1).inner_text() == "2 (refuses owsync 1.2.0 peers)"
    assert page.locator(".owsync-warning").count() == 0  # a policy, not a problem
    assert _row(page, b.addr).locator(".owsync-protocol").inner_text() == "v2 live"
    assert site.errors == []


def test_sync_all_and_a_daemon_error_is_a_notification(site, browser):
    page = site.page(browser, "status")
    page.locator("#owsync-sync-all").click()
    assert wait_for(lambda: ("luci.owsync", "sync", {}) in site.standin.calls, 5)
    page.locator("#owsync-sync-all:enabled").wait_for(timeout=10000)  # once that sync ended
    # the view's own handler, for a peer the daemon does not know: its error reaches the admin
    page.evaluate("""() => currentView.handleSyncPeer('10.9.9.9',
        {currentTarget: document.createElement('button')})""")
    page.wait_for_selector("#maincontent > .alert-message.danger", timeout=5000)
    assert "unknown peer" in page.locator("#maincontent > .alert-message").inner_text()
    assert site.errors == []


def test_a_read_only_user_sees_the_status_and_no_working_sync_button(site, browser):
    page = site.page(browser, "status", ro=True)
    assert page.locator("#owsync-peers tr.owsync-peer").count() == 2
    assert page.locator("button.owsync-sync:enabled").count() == 0
    assert page.locator("#owsync-sync-all").is_disabled()
    assert "Running" in page.locator("#owsync-daemon").inner_text()
    # and the ACL, not only the page, refuses this session the write methods
    refused = page.evaluate(
        """(peer) => L.require('rpc').then(rpc => rpc.declare({object: 'luci.owsync',
        method: 'sync_peer', params: ['peer'], reject: true})(peer))
        .then(r => 'accepted: ' + JSON.stringify(r), e => 'refused: ' + e.message)""",
        site.b.addr,
    )
    assert refused.startswith("refused") and "Access denied" in refused, refused
    page = site.page(browser, "settings", ro=True)
    assert page.locator("#owsync-key-save").is_disabled()
    assert page.locator("#owsync-key-generate").is_disabled()
    assert page.locator("input[name='cbid.owsync.main.peer']").is_disabled()
    assert fingerprint(bytes.fromhex(KEY)) in page.locator("#owsync-key-status").inner_text()
    assert ("owsync.key", "set") not in [c[:2] for c in site.standin.calls]
    assert site.errors == []


def test_when_the_daemon_is_not_running_the_page_says_how_to_start_it(site, browser):
    site.rc["owsync"]["enabled"] = False  # running, but not started at boot
    page = site.page(browser, "status")
    assert "/etc/init.d/owsync enable" in page.locator("#owsync-not-enabled").inner_text()
    site.rc["owsync"]["enabled"] = True
    # the daemon goes away under an open page: Sync now says so, the poll shows it
    site.a.stop()
    _row(page, site.b.addr).locator("button.owsync-sync").click()
    page.wait_for_selector("#maincontent > .alert-message.danger", timeout=5000)
    assert "Object not found" in page.locator("#maincontent > .alert-message").inner_text()
    page.wait_for_selector("#owsync-not-running", timeout=10000)
    assert page.locator("#owsync-peers tr.owsync-peer").count() == 0
    page = site.page(browser, "status")
    text = page.locator("#owsync-not-running").inner_text()
    assert "owsync is not running" in text and "enabled but not running" in text
    site.uci.write_text(site.uci.read_text().replace("enabled '1'", "enabled '0'"))
    page = site.page(browser, "status")
    assert "Enable it under Settings" in page.locator("#owsync-not-running").inner_text()
    site.rc["owsync"]["enabled"] = False
    page = site.page(browser, "status")
    assert "/etc/init.d/owsync enable" in page.locator("#owsync-not-running").inner_text()
    assert page.locator("#owsync-sync-all").is_disabled()
    site.screenshot(page, "status-not-running")
    assert site.errors == []


def test_sync_all_is_disabled_while_the_daemon_is_not_running(site, browser):
    """The daemon stops under an open page: the poll shows it, and "Sync all
    peers now" is disabled (the theme greys a disabled button); started
    again, the next poll enables it."""
    a = site.a
    page = site.page(browser, "status")
    assert page.locator("#owsync-sync-all").is_enabled()
    a.stop()
    page.wait_for_selector("#owsync-not-running", timeout=15000)
    assert page.locator("#owsync-sync-all").is_disabled()
    assert page.locator("#owsync-sync-all[disabled]").count() == 1
    assert not page.locator("#owsync-peers").is_visible()
    assert "the daemon is not running" in page.locator("#owsync-peers-none").inner_text()
    a.start()
    page.locator("#owsync-sync-all:enabled").wait_for(timeout=15000)
    assert page.locator("#owsync-not-running").count() == 0
    assert page.locator("#owsync-peers tr.owsync-peer").count() == 2
    assert site.errors == []


def test_the_tables_are_updated_in_place_under_the_poll(site, browser):
    """A poll refills the rows that are there (the same elements), as LuCI's
    own status views do, rather than building the tables anew."""
    a, b = site.a, site.b
    assert wait_for(lambda: _peer(a, b.addr).get("last_result") == "ok", 10), a.text()
    page = site.page(browser, "status")
    mark = """(sel) => { document.querySelectorAll(sel).forEach(e => e.owsyncMark = 1); }"""
    kept = """(sel) => Array.from(document.querySelectorAll(sel)).every(e => e.owsyncMark === 1)"""
    rows = "#owsync-peers tr.owsync-peer, #owsync-daemon-table tr"
    page.evaluate(mark, rows)
    count = page.locator("#owsync-peers tr.owsync-peer").count()
    (b.dir / "dhcp").write_text("config dnsmasq\n")
    assert wait_for(lambda: a.has("dhcp", b"config dnsmasq\n"), 10), a.text()
    row = _row(page, b.addr)
    page.wait_for_function(
        "(addr) => document.querySelector(`#owsync-peers tr[data-peer='${addr}'] .owsync-counts`)"
        ".textContent.startsWith('1 /')", arg=b.addr, timeout=15000)  # fmt: skip
    assert (
        page.evaluate(kept, rows) and page.locator("#owsync-peers tr.owsync-peer").count() == count
    )
    assert row.locator(".owsync-counts").inner_text().startswith("1 /")
    assert site.errors == []


def test_vrrp_roles_here_and_at_the_peer(site, browser):
    """keepalived's roles (as its hotplug script tells the daemon): a row per
    instance with the role and since when, and the peer's in its column;
    nothing of it before any role is known."""
    a, b = site.a, site.b
    assert wait_for(lambda: _peer(a, b.addr).get("state") == "connected", 10), a.text()
    page = site.page(browser, "status")
    assert not page.locator("#owsync-vrrp-box").is_visible()
    assert _row(page, b.addr).locator(".owsync-vrrp").inner_text() == "-"
    for node, role in ((a, "MASTER"), (b, "BACKUP")):
        r = node.ctl("vrrp", "VI_1", role)
        assert r.returncode == 0, r.stdout + r.stderr
    assert a.ctl("vrrp", "VI_2", "FAULT").returncode == 0
    page.wait_for_selector("#owsync-vrrp-box:not(.hidden)", timeout=15000)
    rows = page.locator("#owsync-vrrp tr.owsync-vrrp")
    assert rows.count() == 2
    assert rows.nth(0).locator(".owsync-vrrp-instance").inner_text() == "VI_1"
    label = rows.nth(0).locator(".owsync-vrrp-role .label")
    assert label.inner_text() == "MASTER" and "success" in label.get_attribute("class")
    since = rows.nth(0).locator(".owsync-vrrp-since")
    assert re.fullmatch(r"since (just now|\d+ s ago)", since.inner_text()), since.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", since.get_attribute("title"))
    assert "important" in rows.nth(1).locator(".label").get_attribute("class")  # FAULT
    assert wait_for(lambda: (_peer(a, b.addr).get("vrrp") or {}).get("VI_1"), 10), a.status()
    page.wait_for_function(
        "(addr) => document.querySelector(`#owsync-peers tr[data-peer='${addr}'] .owsync-vrrp`)"
        ".textContent == 'VI_1: BACKUP'", arg=b.addr, timeout=15000)  # fmt: skip
    assert _row(page, site.dead).locator(".owsync-vrrp").inner_text() == "-"
    site.screenshot(page, "status-vrrp")
    assert site.errors == []


VIEWS = RES / "view/owsync"


@pytest.mark.parametrize("view", ["status", "settings", "history"])
def test_the_views_leave_colours_to_the_theme_and_timing_to_luci(view):
    """No colour of their own (a dark theme would show red on black), no timer
    beside LuCI's poll, and one copy of the text helper (format.js)."""
    src = (VIEWS / f"{view}.js").read_text()
    assert not re.search(r"color\s*:|background\s*:|#[0-9a-fA-F]{3,6}\b", src), view
    assert not re.search(r"setTimeout|setInterval", src), view
    assert not re.search(r"^function text\(", src, re.M), view
    assert "'require owsync.format as fmt';" in src, view


def test_settings_show_the_options_and_the_key_fingerprint_never_the_key(site, browser):
    page = site.page(browser, "settings")
    peers = page.locator("input[name='cbid.owsync.main.peer']").input_value()
    assert peers == f"{site.b.addr} {site.dead}"  # the stand-in shows a list in one input
    for name in ("enabled", "include", "exclude", "port", "host", "poll_interval", "log_level",
                 "plain_mode", "reload_services", "min_protocol"):  # fmt: skip
        assert page.locator(f".cbi-value[data-name='{name}']").count() == 1, name
    warning = page.locator(".cbi-value[data-name='plain_mode'] strong.owsync-plain-warning")
    assert "Only inside a VPN" in warning.inner_text()
    assert "key" not in [
        e.get_attribute("data-name") for e in page.locator(".cbi-value[data-name]").all()
    ]
    status = page.locator("#owsync-key-status").inner_text()
    assert fingerprint(bytes.fromhex(KEY)) in status
    site.screenshot(page, "settings")
    # Generate makes a key in the browser; Save sends it; the page learns only its fingerprint
    page.locator("#owsync-key-generate").click()
    new = page.locator("#owsync-key-input").input_value()
    assert re.fullmatch(r"[0-9a-f]{64}", new) and new != KEY
    page.locator("#owsync-key-save").click()
    expected = fingerprint(bytes.fromhex(new))
    page.wait_for_function(
        f"() => document.getElementById('owsync-key-status').innerText.includes('{expected}')",
        timeout=10000,
    )
    assert site.key_file.read_text() == new + "\n"
    assert page.locator("#owsync-key-input").input_value() == ""
    page.locator("#owsync-key-input").fill("not a key")
    page.locator("#owsync-key-save").click()
    page.wait_for_selector("#maincontent > .alert-message.danger", timeout=5000)
    assert site.key_file.read_text() == new + "\n"
    # neither the old key nor the new one ever came back from the server
    site.page(browser, "status")
    bodies = "\n".join(site.standin.responses)
    assert KEY not in bodies and new not in bodies
    assert site.errors == []


# --- sync groups: Status rows, the Groups table, the ready choices -----------------


EXAMPLES_JS = RES / "owsync/examples.js"
EXAMPLE_FIELDS = ["name", "why", "dir", "include", "exclude", "reload", "restart"]


def luci_examples() -> list[dict]:
    """The ready choices of the Settings page, as owsync/examples.js holds them."""
    m = re.search(r"^var EXAMPLES = (\[.*?^\]);$", EXAMPLES_JS.read_text(), re.S | re.M)
    assert m, "owsync/examples.js: no EXAMPLES table"
    return json.loads(m.group(1))


def test_the_ready_choices_are_the_shipped_examples():
    """examples.js is generated from owsync/core/examples.py (scripts/genexamples.py)."""
    try:
        from owsync.core.examples import EXAMPLES  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("owsync/core/examples.py is not in this tree (branch gconfig)")
    python = [{k: list(e[k]) if isinstance(e[k], (list, tuple)) else e[k] for k in EXAMPLE_FIELDS}
              for e in EXAMPLES]  # fmt: skip
    assert luci_examples() == python, "run: python3 scripts/genexamples.py"


def test_the_ready_choices_are_groups_a_daemon_takes():
    examples = luci_examples()
    assert len(examples) >= 5
    assert len({e["name"] for e in examples}) == len(examples)
    for e in examples:
        assert list(e) == EXAMPLE_FIELDS, e
        assert re.fullmatch(r"[A-Za-z0-9_]+", e["name"]) and e["name"] != "main", e
        assert e["dir"].startswith("/") and e["include"], e
        assert e["why"] and "\n" not in e["why"], e
        for k in ("include", "exclude", "reload", "restart"):
            assert all(isinstance(x, str) and x for x in e[k]), (e["name"], k)
        for service in e["reload"] + e["restart"]:
            assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", service), e


def _view_fields(view: Path) -> list[dict]:
    """Every field a form view defines (tests/luci/form-fields.mjs)."""
    r = subprocess.run([NODE or "node", str(ROOT / "tests/luci/form-fields.mjs"), str(view)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.skipif(not NODE, reason="needs Node.js (.ci/run installs Debian's nodejs)")
def test_the_groups_table_edits_each_group_setting_of_the_schema():
    from owsync.core.settings import BOOL, GROUP_SETTINGS

    fields = [f for f in _view_fields(VIEWS / "settings.js") if f["section_type"] == "group"]
    by_uci = {s.uci: s for s in GROUP_SETTINGS if s.uci}
    # reload and restart: the group-only settings (in the schema with branch gconfig)
    assert {f["name"] for f in fields} == set(by_uci) | {"reload", "restart"}
    assert all(f["widget"] in ("Flag", "Value", "DynamicList") for f in fields)
    for f in fields:
        s = by_uci.get(f["name"])
        if s is None:
            assert f["widget"] == "DynamicList", f
            continue
        if f["widget"] == "Flag":
            assert s.kind == BOOL and f["default"] == ("1" if s.default else "0"), f
        elif f["widget"] == "DynamicList":
            assert s.multi, f
        else:
            assert not s.multi and f["datatype"] == s.datatype(), f


GROUP_PEERS = ("synced", "pending", "absent", "v1")


def _groups(site, dropbear_state: str, peer_state: str, files: int) -> list[dict]:
    """status["groups"] as notes/groups-design.md shapes it."""
    b, dead = site.b.addr, site.dead
    return [
        {"name": "main", "dir": str(site.a.dir), "enabled": True, "state": "syncing",
         "files": 3, "tombstones": 0, "last_change": time.time() - 30, "reload": [],
         "restart": [], "peers": {b: "synced", dead: "pending"}},
        {"name": "dropbear", "dir": "/etc/dropbear", "enabled": True, "state": dropbear_state,
         "reason": "/etc/dropbear does not exist" if dropbear_state == "waiting" else None,
         "files": files, "tombstones": 0, "last_change": None, "reload": [],
         "restart": ["dropbear"], "peers": {b: peer_state, dead: "v1"}},
    ]  # fmt: skip


def test_status_has_a_row_per_group_updated_in_place_under_the_poll(site, browser):
    """The rows come from status["groups"] (supplied here in the design's shape: the
    daemons of this tree may not publish it yet); a poll refills them in place."""
    state = {"groups": _groups(site, "waiting", "pending", 0)}
    site.standin.groups = lambda: state["groups"]
    page = site.page(browser, "status")
    assert page.locator("#owsync-groups-box").is_visible()
    row = page.locator("#owsync-groups tr[data-group='dropbear']")
    assert page.locator("#owsync-groups tr.owsync-group").count() == 2
    assert row.locator(".owsync-group-dir").inner_text() == "/etc/dropbear"
    label = row.locator(".owsync-group-state .label")
    assert label.inner_text() == "Waiting" and "warning" in label.get_attribute("class")
    assert "/etc/dropbear does not exist" in row.locator(".owsync-group-state").inner_text()
    assert row.locator(".owsync-group-actions").inner_text() == "restart dropbear"
    peer = row.locator(f".owsync-group-peer[data-peer='{site.b.addr}'] .label")
    assert peer.inner_text() == "pending" and "notice" in peer.get_attribute("class")
    v1 = row.locator(f".owsync-group-peer[data-peer='{site.dead}']")
    assert "owsync 1.2.0" in v1.get_attribute("title")
    assert "warning" in v1.locator(".label").get_attribute("class")
    main = page.locator("#owsync-groups tr[data-group='main']")
    assert main.locator(".owsync-group-files").inner_text() == "3 files, 0 tombstones"
    site.screenshot(page, "status-groups")
    marked = "#owsync-groups tr.owsync-group, #owsync-groups .owsync-group-peer"
    page.evaluate("(sel) => document.querySelectorAll(sel).forEach(e => e.owsyncMark = 1)",
                  marked)  # fmt: skip
    state["groups"] = _groups(site, "syncing", "synced", 2)
    page.wait_for_function(
        "() => document.querySelector(\"#owsync-groups tr[data-group='dropbear']"
        " .owsync-group-state .label\").textContent == 'Syncing'", timeout=15000)  # fmt: skip
    assert page.evaluate("(sel) => Array.from(document.querySelectorAll(sel))"
                         ".every(e => e.owsyncMark === 1)", marked)  # fmt: skip
    assert "success" in peer.get_attribute("class") and peer.inner_text() == "synced"
    assert row.locator(".owsync-group-files").inner_text() == "2 files, 0 tombstones"
    assert "does not exist" not in row.locator(".owsync-group-state").inner_text()
    # main alone again (the group removed): no table
    state["groups"] = state["groups"][:1]
    page.wait_for_selector("#owsync-groups-box.hidden", state="attached", timeout=15000)
    assert page.locator("#owsync-groups tr.owsync-group").count() == 0
    assert site.errors == []


def test_status_with_real_daemons_shows_a_group_synced_with_the_peer(site, browser):
    """Two daemons with the group ``keys``; b does not call a (its one peer is
    elsewhere): a asks for the group once b is back with it."""
    a, b = site.a, site.b
    for node in (a, b):
        keys = node.dir.parent / f"{node.name}-keys"
        keys.mkdir()
        node.stop()
        peers = [b.addr, site.dead] if node is a else [f"127.0.0.1:{free_port()}"]
        node.configure(peers, poll=600, extra=f"group.keys.dir={keys}\ngroup.keys.include=*\n")
        node.start()
    (b.dir.parent / "b-keys" / "dropbear_rsa_host_key").write_text("key\n")
    page = site.page(browser, "status")
    assert wait_for(lambda: (a.dir.parent / "a-keys" / "dropbear_rsa_host_key").exists(), 20)
    page.wait_for_function(
        "(addr) => { const l = document.querySelector(`#owsync-groups tr[data-group='keys']"
        " .owsync-group-peer[data-peer='${addr}'] .label`);"
        " return l && l.textContent == 'synced'; }",
        arg=b.addr, timeout=30000)  # fmt: skip
    row = page.locator("#owsync-groups tr[data-group='keys']")
    assert row.locator(".owsync-group-state .label").inner_text() == "Syncing"
    assert row.locator(".owsync-group-files").inner_text().startswith("1 files")
    assert site.errors == []


def test_settings_list_the_groups_and_add_a_shipped_example_in_one_click(site, browser):
    site.uci.write_text(site.uci.read_text() + "\nconfig group 'keys'\n\toption dir '/srv/keys'\n"
                        "\tlist include 'id_*'\n\tlist restart 'dropbear'\n")  # fmt: skip
    examples = luci_examples()
    page = site.page(browser, "settings")
    grid = page.locator("#cbi-owsync-group")
    assert grid.locator("tr[data-sid]").count() == 1
    assert page.locator("input[name='cbid.owsync.keys.dir']").input_value() == "/srv/keys"
    assert page.locator("input[name='cbid.owsync.keys.restart']").input_value() == "dropbear"
    choices = page.locator("#owsync-examples tr.owsync-example")
    assert [c.get_attribute("data-example") for c in choices.all()] == [e["name"] for e in examples]
    for c, e in zip(choices.all(), examples, strict=True):
        assert c.locator(".owsync-example-why").inner_text() == e["why"]
        assert c.locator(".owsync-example-files").inner_text().startswith(e["dir"] + ": ")
    ex = examples[0]
    button = page.locator(f"#owsync-examples tr[data-example='{ex['name']}'] button")
    assert button.is_enabled() and button.inner_text() == "Add"
    button.click()
    page.wait_for_selector(f"#cbi-owsync-group tr[data-sid='{ex['name']}']", timeout=5000)
    for k in ("dir", "include", "exclude", "reload", "restart"):
        value = page.locator(f"input[name='cbid.owsync.{ex['name']}.{k}']").input_value()
        assert value == (ex[k] if k == "dir" else " ".join(ex[k])), k
    assert button.is_disabled() and button.inner_text() == "Added"
    assert f"Group {ex['name']} added" in page.locator("#maincontent > .alert-message").inner_text()
    assert grid.locator("tr[data-sid]").count() == 2
    # the others are still one click away; nothing was sent to the router (Save & Apply does)
    assert page.locator("#owsync-examples button:enabled").count() == len(examples) - 1
    assert not [c for c in site.standin.calls if c[:2] in (("uci", "add"), ("uci", "set"))]
    site.screenshot(page, "settings-groups")
    ro = site.page(browser, "settings", ro=True)
    assert ro.locator("#owsync-examples button:enabled").count() == 0
    assert ro.locator("input[name='cbid.owsync.keys.dir']").is_disabled()
    assert site.errors == []
