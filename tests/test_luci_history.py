"""Services → owsync → History (view/owsync/history.js) in headless Chromium.

In CI, against the LuCI stand-in (tests/luci_standin.py, tests/luci/standin/):
``SampleStandIn`` answers ``luci.owsync versions|diff|restore`` from a store
described here (a conflict, a file that is not text, a local edit, a deletion,
a path and a diff made of markup), applying the app's own ACL file; the same
view then runs against two real daemons through the stand-in's relay to the
control socket.  Opt-in, in LuCI's real runtime: tests/test_luci_real.py's
router (``OWSYNC_LUCI_ROOT``, ``OWSYNC_OPENWRT_ROOT``), skipped while the daemon
publishes no ``versions`` method.  tests/luci/history.test.mjs checks the
formatting under Node.js (run by test_luci_app.py's node test).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import KEY, DaemonNode, Router, Session, _skip, free_port, tracked, wait_for
from luci_standin import SampleStandIn, StandIn

from owsync.service.control import ControlError, request

PEER = "192.168.1.2"
# a path and diff lines a peer could have written: markup that must stay text
HOSTILE_PATH = (
    "etc/<script>window.owsyncInjected=1</script>"
    '<img src=x id=owsync-injected onerror="window.owsyncInjected=2">'
)
HOSTILE_LINE = '<img src=x class=owsync-injected onerror="window.owsyncInjected=3"><script>window.owsyncInjected=4</script>'  # noqa: E501
CONFLICT_DIFF = (
    "--- firewall (version 5)\n+++ firewall (now)\n@@ -1,3 +1,3 @@\n config defaults\n"
    "-\toption input 'ACCEPT'\n+\toption input 'REJECT'\n"
    f"-{HOSTILE_LINE}\n+</pre><b id=owsync-bold>bold</b>\n"
)


def sample_versions(now_ms: int) -> list[dict]:
    """Newest first, as the daemon lists them."""

    def v(vid, path, reason, peer, ago_s, size=1536, text=True):
        return {"id": vid, "path": path, "hash": f"{vid:02x}" * 32, "size": size,
                "mtime": now_ms - ago_s * 1000 - 3_600_000, "mode": 0o600, "reason": reason,
                "peer": peer, "kept": now_ms - ago_s * 1000, "text": text}  # fmt: skip

    return [
        v(5, "firewall", "conflict", PEER, 60),
        v(4, "ca.der", "replaced", PEER, 600, size=2_621_440, text=False),
        v(3, HOSTILE_PATH, "replaced", PEER, 7200, size=200),
        v(2, "dhcp", "edited", "", 3 * 86400, size=512),
        v(1, "network", "deleted", PEER, 5 * 86400, size=700),
    ]


STORE = {"dir": "/etc/owsync/owsync.versions", "bytes": 2_625_000, "objects": 6, "keep": 10,
         "max_size": 4 * 1024 * 1024, "max_age_days": 30}  # fmt: skip
DIFFS = {
    5: {"diff": CONFLICT_DIFF},
    4: {"text": False},
    3: {"diff": f"--- a\n+++ b\n@@ -1 +1 @@\n-{HOSTILE_LINE}\n+x\n", "truncated": True},
    2: {"diff": ""},  # identical to the current file
    1: {
        "current": "absent",
        "diff": "--- network (version 1)\n+++ network (now)\n"
        "@@ -1 +0,0 @@\n-config interface 'lan'\n",
    },  # fmt: skip
}


RUNNING = {"owsync": {"enabled": True, "running": True}}  # the stand-in's service list


def uci_and_key(tmp: Path, peer: str | None = None) -> tuple[Path, Path]:
    """A stand-in's UCI file (owsync enabled, ``peer`` its one peer if given) and key file."""
    uci = tmp / "uci-owsync"
    uci.write_text("config owsync 'main'\n\toption enabled '1'\n"
                   + (f"\tlist peer '{peer}'\n" if peer else ""))  # fmt: skip
    key = tmp / "key"
    key.write_text(KEY + "\n")
    return uci, key


def open_view(browser, url: str, errors: list[str], view: str = "history", query: str = ""):
    """A new page on the stand-in's ``view``, once rendered; its errors go to ``errors``."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/view/owsync/{view}{query}")
    page.wait_for_selector(f"body[data-rendered='view.owsync.{view}']", timeout=15000)
    return page


class Site:
    """The stand-in with the sample store, a page per call, and what went wrong in it."""

    def __init__(self, tmp: Path, versions: list[dict] | None = None, store: dict | None = None):
        self.tmp = tmp
        self.uci, self.key_file = uci_and_key(tmp)
        self.now_ms = int(time.time() * 1000)
        self.standin = SampleStandIn(
            self.uci, self.key_file, RUNNING,
            sample_versions(self.now_ms) if versions is None else versions,
            dict(STORE) if store is None else store, DIFFS,
        )  # fmt: skip
        self.errors: list[str] = []

    def page(self, browser, ro: bool = False):
        return open_view(browser, self.standin.url, self.errors, query="?ro=1" if ro else "")

    def screenshot(self, page, name: str) -> None:
        out = Path(os.environ.get("OWSYNC_SCREENSHOTS") or self.tmp)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"standin-{name}.png"), full_page=True)

    def calls(self, method: str) -> list[dict]:
        return [a for o, m, a in self.standin.calls if (o, m) == ("luci.owsync", method)]


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.standin.close()


def _row(page, vid: int):
    return page.locator(f"#owsync-versions tr.owsync-version[data-id='{vid}']")


def _not_injected(page) -> None:
    assert page.evaluate("() => window.owsyncInjected") is None
    assert page.locator("#owsync-injected, .owsync-injected, #owsync-bold").count() == 0
    assert page.locator("#view script, #modal_overlay script").count() == 0


def _modal(page):
    page.wait_for_selector("body.modal-overlay-active #modal_overlay .modal", timeout=5000)
    return page.locator("#modal_overlay .modal")


def _diff(page, row):
    """The row's Diff clicked: its modal and the diff's text."""
    row.locator("button.owsync-diff").click()
    modal = _modal(page)
    return modal, modal.locator("pre.owsync-diff-text").inner_text()


def _restore_from_diff(page, modal, timeout: int = 10000) -> None:
    """Restore from the diff's modal, confirmed, until the page says it is done."""
    modal.locator("button.owsync-diff-restore").click()
    _modal(page).locator("button.owsync-restore-confirm").click()
    page.wait_for_selector("#maincontent > .alert-message.info", timeout=timeout)


def test_kept_versions_newest_first_with_the_conflict_marked(site, browser):
    page = site.page(browser)
    rows = page.locator("#owsync-versions tr.owsync-version")
    assert [r.get_attribute("data-id") for r in rows.all()] == ["5", "4", "3", "2", "1"]
    conflict = _row(page, 5)
    assert "owsync-conflict" in conflict.get_attribute("class")
    assert conflict.locator(".owsync-reason .label").inner_text() == "Conflict"
    assert "lost to a newer write from a peer" in conflict.locator(".owsync-reason").inner_text()
    assert conflict.locator(".owsync-path").inner_text() == "firewall"
    assert conflict.locator(".owsync-by").inner_text() == PEER
    assert conflict.locator(".owsync-kept").inner_text() == "1 min ago"
    title = conflict.locator(".owsync-kept").get_attribute("title")
    assert title == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(site.now_ms / 1000 - 60))
    assert conflict.locator(".owsync-size").inner_text() == "1.5 KiB"
    # only the conflict is a label; the others say what happened in words
    assert page.locator("#owsync-versions .label").count() == 1
    assert _row(page, 4).locator(".owsync-size").inner_text() == "2.5 MiB"
    assert "overwritten by a newer write" in _row(page, 4).locator(".owsync-reason").inner_text()
    assert _row(page, 2).locator(".owsync-by").inner_text() == "this router"
    assert "edit on this router" in _row(page, 2).locator(".owsync-reason").inner_text()
    assert _row(page, 2).locator(".owsync-kept").inner_text() == "3 days ago"
    assert "deleted by a peer" in _row(page, 1).locator(".owsync-reason").inner_text()
    # a path made of markup is text on the page
    assert _row(page, 3).locator(".owsync-path").inner_text() == HOSTILE_PATH
    _not_injected(page)
    store = page.locator("#owsync-store").inner_text()
    assert store == (
        "5 version(s) kept; the store holds 2.5 MiB in 6 content(s), in "
        "/etc/owsync/owsync.versions. Limits: 10 versions per file, 4.0 MiB in all, 30 days."
    )
    assert page.locator("#owsync-conflicts").inner_text().startswith("1 conflict(s)")
    assert page.locator("button.owsync-diff").count() == 5
    assert page.locator("button.owsync-restore").count() == 5
    site.screenshot(page, "history")
    assert site.calls("versions") == [{}]
    assert site.errors == []


def grouped_versions(now_ms: int) -> list[dict]:
    """Main's sample and two groups' versions, newest first: each store numbers its own,
    so the ids collide across groups (shaped as notes/groups-design.md says)."""
    main = sample_versions(now_ms)[:2]
    extra = [
        {"id": 1, "group": "dropbear", "path": "dropbear_rsa_host_key", "hash": "d1" * 32,
         "size": 1200, "mtime": now_ms - 9_000_000, "mode": 0o600, "reason": "replaced",
         "peer": PEER, "kept": now_ms - 120_000, "text": False},
        {"id": 5, "group": "passwd", "path": "shadow", "hash": "e5" * 32, "size": 300,
         "mtime": now_ms - 9_000_000, "mode": 0o600, "reason": "edited", "peer": "",
         "kept": now_ms - 900_000, "text": True},
    ]  # fmt: skip
    return sorted(main + extra, key=lambda v: v["kept"], reverse=True)


def test_each_version_says_its_group_and_the_filter_shows_one_group(tmp_path, browser):
    site = Site(tmp_path, versions=grouped_versions(int(time.time() * 1000)))
    site.standin.stores = {
        "main": dict(STORE),
        "dropbear": dict(STORE, dir="/etc/owsync/owsync.dropbear.versions", bytes=1200, objects=1),
        "passwd": dict(STORE, dir="/etc/owsync/owsync.passwd.versions", bytes=300, objects=1),
    }
    try:
        page = site.page(browser)
        rows = page.locator("#owsync-versions tr.owsync-version")
        assert [r.get_attribute("data-id") for r in rows.all()] == ["5", "dropbear:1", "4",
                                                                    "passwd:5"]  # fmt: skip
        assert [r.locator(".owsync-group").inner_text() for r in rows.all()] == [
            "main", "dropbear", "main", "passwd"]  # fmt: skip
        assert page.locator("#owsync-versions th").nth(1).inner_text() == "Group"
        box = page.locator("#owsync-group-filter-box")
        assert box.is_visible()
        select = page.locator("#owsync-group-filter")
        assert [o.get_attribute("value") for o in select.locator("option").all()] == [
            "", "main", "dropbear", "passwd"]  # fmt: skip
        assert select.locator("option").first.inner_text() == "All groups"
        assert page.locator("#owsync-store").inner_text().startswith("4 version(s) kept")
        select.select_option("dropbear")
        assert [r.get_attribute("data-id") for r in rows.all()] == ["dropbear:1"]
        assert "owsync.dropbear.versions" in page.locator("#owsync-store").inner_text()
        assert page.locator("#owsync-store").inner_text().startswith("1 version(s) kept")
        assert page.locator("#owsync-conflicts").count() == 0  # the conflict is main's
        # diff and restore name the version as GROUP:ID
        page.locator("tr[data-id='dropbear:1'] button.owsync-diff").click()
        modal = _modal(page)
        assert "dropbear_rsa_host_key: version dropbear:1" in modal.inner_text()
        modal.locator("button.owsync-modal-close").click()
        assert site.calls("diff") == [{"id": "dropbear:1"}]
        page.locator("tr[data-id='dropbear:1'] button.owsync-restore").click()
        modal = _modal(page)
        assert "Write version dropbear:1 back to dropbear_rsa_host_key?" in modal.inner_text()
        modal.locator("button.owsync-restore-confirm").click()
        page.wait_for_selector("tr[data-id='dropbear:2']", timeout=5000)
        assert site.standin.restored == ["dropbear:1"]
        assert "dropbear_rsa_host_key restored from version dropbear:1." in page.locator(
            "#maincontent > .alert-message").first.inner_text()  # fmt: skip
        assert select.input_value() == "dropbear"  # the refresh kept the choice
        assert [r.get_attribute("data-id") for r in rows.all()] == ["dropbear:2", "dropbear:1"]
        select.select_option("")
        assert rows.count() == 5
        site.screenshot(page, "history-groups")
        assert site.errors == []
    finally:
        site.standin.close()


def test_without_groups_there_is_no_filter(site, browser):
    page = site.page(browser)
    assert not page.locator("#owsync-group-filter-box").is_visible()
    rows = page.locator("#owsync-versions tr.owsync-version").all()
    assert {r.locator(".owsync-group").inner_text() for r in rows} == {"main"}
    assert site.errors == []


def test_diff_shows_the_unified_diff_as_text_in_a_modal(site, browser):
    page = site.page(browser)
    assert not page.locator("#modal_overlay").is_visible()
    _row(page, 5).locator("button.owsync-diff").click()
    modal = _modal(page)
    assert modal.locator("h4").inner_text() == "Differences from the current file"
    pre = modal.locator("pre.owsync-diff-text")
    assert pre.inner_text() == CONFLICT_DIFF
    assert pre.locator(".owsync-diff-del").count() == 2
    assert pre.locator(".owsync-diff-add").count() == 2
    assert pre.locator(".owsync-diff-head").count() == 2
    assert pre.locator(".owsync-diff-hunk").inner_text() == "@@ -1,3 +1,3 @@\n"
    assert "firewall: version 5" in modal.locator(".owsync-diff-what").inner_text()
    _not_injected(page)
    site.screenshot(page, "history-diff")
    modal.locator("button.owsync-modal-close").click()
    assert not page.locator("#modal_overlay").is_visible()
    assert site.calls("diff") == [{"id": 5}]

    # a version that is not text: no lines, said in words
    _row(page, 4).locator("button.owsync-diff").click()
    modal = _modal(page)
    assert "not text (2.5 MiB)" in modal.locator(".owsync-diff-binary").inner_text()
    assert modal.locator("pre").count() == 0
    modal.locator("button.owsync-modal-close").click()
    # markup in the path and in the diff, and a diff the daemon cut
    _row(page, 3).locator("button.owsync-diff").click()
    modal = _modal(page)
    assert f"-{HOSTILE_LINE}\n" in modal.locator("pre.owsync-diff-text").inner_text()
    assert modal.locator(".owsync-diff-what").inner_text().startswith(HOSTILE_PATH + ": ")
    assert modal.locator(".owsync-diff-truncated").count() == 1
    _not_injected(page)
    modal.locator("button.owsync-modal-close").click()
    # identical to the current file; a file deleted since
    _row(page, 2).locator("button.owsync-diff").click()
    assert "identical" in _modal(page).locator(".owsync-diff-same").inner_text()
    _modal(page).locator("button.owsync-modal-close").click()
    _row(page, 1).locator("button.owsync-diff").click()
    modal = _modal(page)
    assert "does not exist here now" in modal.locator(".owsync-diff-absent").inner_text()
    assert "-config interface 'lan'" in modal.locator("pre.owsync-diff-text").inner_text()
    assert [a["id"] for a in site.calls("diff")] == [5, 4, 3, 2, 1]
    assert site.calls("restore") == []
    assert site.errors == []


def test_restore_asks_first_then_calls_restore_with_the_id_and_refreshes(site, browser):
    page = site.page(browser)
    _row(page, 5).locator("button.owsync-restore").click()
    modal = _modal(page)
    assert modal.locator(".owsync-restore-what").inner_text() == "Write version 5 back to firewall?"
    modal.locator("button.owsync-modal-close").click()  # Cancel: nothing restored
    assert not page.locator("#modal_overlay").is_visible()
    assert site.calls("restore") == []

    _row(page, 5).locator("button.owsync-restore").click()
    _modal(page).locator("button.owsync-restore-confirm").click()
    page.wait_for_selector("#maincontent > .alert-message.info", timeout=5000)
    assert "firewall restored from version 5." in page.locator(
        "#maincontent > .alert-message").inner_text()  # fmt: skip
    assert site.calls("restore") == [{"id": 5}]
    assert not page.locator("#modal_overlay").is_visible()
    # the list is read again at once: the content the restore replaced is kept
    _row(page, 6).wait_for(timeout=5000)
    assert "replaced by a restore" in _row(page, 6).locator(".owsync-reason").inner_text()

    # from the Diff modal too, with the same confirmation, for the markup path
    _row(page, 3).locator("button.owsync-diff").click()
    _modal(page).locator("button.owsync-diff-restore").click()
    modal = _modal(page)
    assert modal.locator(".owsync-restore-what").inner_text() == (
        f"Write version 3 back to {HOSTILE_PATH}?"
    )
    _not_injected(page)
    modal.locator("button.owsync-restore-confirm").click()
    assert wait_for(lambda: site.calls("restore") == [{"id": 5}, {"id": 3}], 5)
    _row(page, 7).wait_for(timeout=5000)
    _not_injected(page)
    assert site.errors == []


def test_a_read_only_user_sees_diffs_and_no_restore(site, browser):
    page = site.page(browser, ro=True)
    assert page.locator("#owsync-versions tr.owsync-version").count() == 5
    assert page.locator("button.owsync-diff").count() == 5
    assert page.locator("button.owsync-restore").count() == 0
    _row(page, 5).locator("button.owsync-diff").click()
    modal = _modal(page)
    assert modal.locator("pre.owsync-diff-text").inner_text() == CONFLICT_DIFF
    assert modal.locator("button.owsync-diff-restore").count() == 0
    # and the ACL, not only the page, refuses this session the restore
    refused = page.evaluate(
        """() => L.require('rpc').then(rpc => rpc.declare({object: 'luci.owsync',
        method: 'restore', params: ['id'], reject: true})(5))
        .then(r => 'accepted: ' + JSON.stringify(r), e => 'refused: ' + e.message)"""
    )
    assert refused.startswith("refused") and "Access denied" in refused, refused
    assert site.standin.restored == []
    assert site.errors == []


@pytest.mark.parametrize("answer", ["error", "status"])
def test_a_version_gone_meanwhile_is_a_notification_and_the_list_follows(site, browser, answer):
    # the daemon answers an unknown id with {"error": ...}; a ubus status (NOT_FOUND) works too
    site.standin.not_found_status = answer == "status"
    why = "ubus code 4" if answer == "status" else "no version"
    page = site.page(browser)
    site.standin.versions[:] = [v for v in site.standin.versions if v["id"] != 4]  # pruned
    _row(page, 4).locator("button.owsync-diff").click()
    page.wait_for_selector("#maincontent > .alert-message.danger", timeout=5000)
    text = page.locator("#maincontent > .alert-message").inner_text()
    assert "Cannot show the differences of ca.der" in text and why in text, text
    _row(page, 4).wait_for(state="detached", timeout=5000)
    assert page.locator("body.modal-overlay-active").count() == 0
    site.standin.versions[:] = [v for v in site.standin.versions if v["id"] != 2]
    _row(page, 2).locator("button.owsync-restore").click()
    _modal(page).locator("button.owsync-restore-confirm").click()
    page.wait_for_function(
        "(why) => document.body.innerText.includes('Restoring dhcp failed: ') &&"
        " document.body.innerText.includes(why)",
        arg=why,
        timeout=5000,
    )
    _row(page, 2).wait_for(state="detached", timeout=5000)
    assert site.standin.restored == []
    assert site.errors == []


def test_an_empty_store_and_no_daemon_say_so(tmp_path, browser):
    s = Site(tmp_path, versions=[])
    try:
        page = s.page(browser)
        assert "No version is kept yet" in page.locator("#owsync-versions-empty").inner_text()
        assert page.locator("#owsync-versions").count() == 0
        assert page.locator("#owsync-conflicts").count() == 0
        assert page.locator("#owsync-store").inner_text().startswith("0 version(s) kept;")
        s.screenshot(page, "history-empty")
        s.standin.store["keep"] = 0
        page = s.page(browser)
        assert "No versions are kept" in page.locator("#owsync-store").inner_text()
        # the daemon stops under the open page: the poll says so; it comes back: the list
        s.standin.running = False
        page.wait_for_selector("#owsync-history-error", timeout=15000)
        assert "owsync is not running" in page.locator("#owsync-history-error").inner_text()
        page = s.page(browser)
        assert "owsync is not running" in page.locator("#owsync-history-error").inner_text()
        s.standin.running = True
        s.standin.versions[:] = sample_versions(s.now_ms)
        page.wait_for_selector("#owsync-versions tr.owsync-version", timeout=15000)
        assert page.locator("#owsync-history-error").count() == 0
        assert s.errors == []
    finally:
        s.standin.close()


# --- against two real daemons, through the stand-in's relay ---------------------


def _keeps_versions(node) -> str | None:
    try:
        reply = request(str(node.sock), {"method": "versions"}, timeout=10)
    except ControlError as exc:
        return f"the daemon did not answer versions: {exc}"
    return None if reply.get("ok") else f"the daemon has no versions: {reply.get('error')}"


def daemon_pair(tmp_path: Path, extra=lambda name: ""):
    """A, whose page we look at, and B, which never pushes (its one peer is nobody),
    as in test_luci_app.py: B's writes reach A only when A syncs.  ``extra(name)``:
    more of a node's key=value lines.  Returns what stops them (``next(nodes,
    None)``), A and B, configured, not started."""
    nodes = tracked(tmp_path, DaemonNode)
    daemons = next(nodes)
    a, b = daemons("a"), daemons("b")
    a.configure([b.addr], poll=600, extra=extra("a"))
    b.configure([f"127.0.0.1:{free_port()}"], poll=600, extra=extra("b"))
    return nodes, a, b


@pytest.fixture
def real(tmp_path):
    """daemon_pair's A and B, started, and the stand-in relaying to A."""
    nodes, a, b = daemon_pair(tmp_path)
    a.start()
    b.start()
    why = _keeps_versions(a)
    standin = None
    try:
        if why:
            pytest.skip(why)
        standin = StandIn(a.sock, *uci_and_key(tmp_path, b.addr), RUNNING)
        yield a, b, standin
    finally:
        if standin:
            standin.close()
        next(nodes, None)  # stops the daemons, by PID


def _sync(a) -> None:
    r = a.ctl("sync", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr + a.text()


def test_with_real_daemons_a_replaced_file_is_kept_diffed_and_restored(real, browser, tmp_path):
    a, b, standin = real
    lan, home = (
        b"config dnsmasq\n\toption domain 'lan'\n",
        b"config dnsmasq\n\toption domain 'home'\n",
    )
    (a.dir / "dhcp").write_bytes(lan)
    assert wait_for(lambda: b.has("dhcp", lan), 15), a.text()  # A pushes its edit to B
    time.sleep(1.1)  # B's write is newer by the clock
    (b.dir / "dhcp").write_bytes(home)
    time.sleep(0.5)
    _sync(a)
    assert a.has("dhcp", home), a.text()
    errors: list[str] = []
    page = open_view(browser, standin.url, errors)
    row = page.locator("#owsync-versions tr.owsync-version.owsync-reason-replaced").first
    row.wait_for(timeout=5000)
    assert row.locator(".owsync-path").inner_text() == "dhcp"
    assert row.locator(".owsync-by").inner_text() == b.addr
    assert row.locator(".owsync-size").inner_text() == f"{len(lan)} B"
    vid = int(row.get_attribute("data-id"))
    modal, diff = _diff(page, row)
    assert "-\toption domain 'lan'\n" in diff and "+\toption domain 'home'\n" in diff, diff
    _restore_from_diff(page, modal)
    assert f"dhcp restored from version {vid}." in page.locator(
        "#maincontent > .alert-message").inner_text()  # fmt: skip
    assert a.has("dhcp", lan), a.text()
    # what the restore replaced is kept in turn, and the page shows it at once
    page.locator("#owsync-versions tr.owsync-reason-restored").first.wait_for(timeout=5000)
    # the restore is a change like any other: A sends it to its peer
    assert wait_for(lambda: b.has("dhcp", lan), 15), a.text()
    out = Path(os.environ.get("OWSYNC_SCREENSHOTS") or tmp_path)
    page.screenshot(path=str(out / "standin-history-real.png"), full_page=True)
    assert ("luci.owsync", "restore", {"id": vid}) in standin.calls
    assert errors == []


# --- opt-in: LuCI's real runtime (tests/test_luci_real.py's router) --------------


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    why = _skip()
    if why:
        pytest.skip(why)
    rt = Router(tmp_path_factory.mktemp("luci-history"))
    try:
        assert wait_for(lambda: (rt.status() or {}).get("peers"), 30), rt.r.sh(
            "/sbin/logread"
        ).stdout
        assert wait_for(lambda: rt.status()["peers"][0].get("last_result") == "ok", 20)
        listed = rt.r.sh("ubus -v list luci.owsync").stdout
        if '"versions"' not in listed:
            pytest.skip(f"the daemon publishes no luci.owsync versions yet: {listed!r}")
        yield rt
    finally:
        rt.r.stop()


def _replaced_dhcp(router) -> tuple[bytes, bytes]:
    """The peer writes a newer dhcp; the router syncs, keeping the one it replaced."""
    old = router.r.ok("cat /etc/config/dhcp").encode()
    new = b"config dnsmasq\n\toption domain 'home'\n"
    time.sleep(1.1)  # newer by the clock than what the router has
    router.r.ok("printf 'config dnsmasq\\n\\toption domain %s\\n' \"'home'\" > /srv/peer/dhcp")
    router.r.ok("ubus call owsync sync")
    assert wait_for(lambda: router.r.sh("cat /etc/config/dhcp").stdout.encode() == new, 20), (
        router.r.sh("/sbin/logread").stdout
    )
    return old, new


def test_real_luci_history_diff_and_restore_and_a_read_only_user(router, browser):
    old, new = _replaced_dhcp(router)
    s = Session(browser, router, "root")
    s.open("history")
    row = s.page.locator("#owsync-versions tr.owsync-reason-replaced").first
    try:
        row.wait_for(timeout=15000)
    except Exception:
        s.screenshot("history-failed")
        raise AssertionError(f"{s.page.inner_text('body')}\n{s.errors}") from None
    assert row.locator(".owsync-path").inner_text() == "dhcp"
    assert row.locator(".owsync-by").inner_text() == router.peer
    vid = int(row.get_attribute("data-id"))
    assert "versions per file" in s.page.inner_text("#owsync-store")
    modal, diff = _diff(s.page, row)
    assert "+\toption domain 'home'\n" in diff, diff
    s.page.wait_for_timeout(300)  # the theme fades the modal in
    s.screenshot("history-diff")
    modal.locator("button.owsync-modal-close").click()

    # a viewer: the list and the diff, no Restore, and rpcd refuses it the method
    v = Session(browser, router, "viewer")
    v.open("history")
    v.page.locator(f"#owsync-versions tr[data-id='{vid}']").wait_for(timeout=15000)
    assert v.page.locator("button.owsync-restore").count() == 0
    v.page.locator(f"#owsync-versions tr[data-id='{vid}'] button.owsync-diff").click()
    assert _modal(v.page).locator("button.owsync-diff-restore").count() == 0
    reply = v.page.evaluate(
        """(id) => fetch(L.env.ubuspath, {method: 'POST', body: JSON.stringify({jsonrpc: '2.0',
            id: 1, method: 'call', params: [L.env.sessionid, 'luci.owsync', 'restore', {id}]})})
            .then(r => r.json())""",
        vid,
    )
    assert reply.get("error", {}).get("message") == "Access denied", reply
    assert router.r.ok("cat /etc/config/dhcp").encode() == new
    assert v.errors == [], v.errors

    # root restores it: confirmation, the file, the notification, the list
    s.page.locator(f"#owsync-versions tr[data-id='{vid}'] button.owsync-restore").click()
    _modal(s.page).locator("button.owsync-restore-confirm").click()
    s.page.wait_for_selector("#maincontent > .alert-message.info", timeout=15000)
    assert f"dhcp restored from version {vid}." in s.page.inner_text(
        "#maincontent > .alert-message"
    )
    assert router.r.ok("cat /etc/config/dhcp").encode() == old
    s.page.locator("#owsync-versions tr.owsync-reason-restored").first.wait_for(timeout=10000)
    s.screenshot("history")
    assert s.errors == [], s.errors
    assert not any(KEY in b for b in s.bodies + v.bodies)


def test_with_real_daemons_a_conflict_is_marked(real, browser):
    """A's write that never reached B loses to B's newer write: A keeps it as a conflict."""
    a, b, standin = real
    b.stop()
    (a.dir / "firewall").write_bytes(b"config defaults\n\toption input 'ACCEPT'\n")
    time.sleep(1.5)  # A tries to push it; B is down
    (b.dir / "firewall").write_bytes(b"config defaults\n\toption input 'REJECT'\n")
    b.start()
    _sync(a)
    assert a.has("firewall", b"config defaults\n\toption input 'REJECT'\n"), a.text()
    errors: list[str] = []
    page = open_view(browser, standin.url, errors)
    row = page.locator("#owsync-versions tr.owsync-conflict")
    row.wait_for(timeout=5000)
    assert row.locator(".owsync-path").inner_text() == "firewall"
    assert row.locator(".owsync-label-conflict").inner_text() == "Conflict"
    assert row.locator(".owsync-by").inner_text() == b.addr
    assert page.locator("#owsync-conflicts").inner_text().startswith("1 conflict(s)")
    _, diff = _diff(page, row)
    assert "-\toption input 'ACCEPT'\n" in diff and "+\toption input 'REJECT'\n" in diff, diff
    assert errors == []
    # the Status page says so too, and leads to History
    page.goto(f"{standin.url}/view/owsync/status")
    page.wait_for_selector("body[data-rendered='view.owsync.status']", timeout=15000)
    note = page.locator("#owsync-status-conflicts")
    note.wait_for(timeout=5000)
    assert note.inner_text().startswith("Conflicts: 1 write(s) made on this router lost")
    assert f"Latest: firewall, replaced by {b.addr}." in note.inner_text()
    assert note.locator("a").get_attribute("href") == "/cgi-bin/luci/admin/services/owsync/history"
    assert errors == []


def test_with_real_daemons_a_group_version_is_listed_diffed_and_restored(tmp_path, browser):
    """A and B with the group ``keys`` (needs branches gconfig and gengine): B's
    newer key replaces A's, whose old one History lists under ``keys``, diffs
    and restores as keys:ID through the daemon."""
    keys = {n: tmp_path / f"{n}-keys" for n in ("a", "b")}
    for d in keys.values():
        d.mkdir()
    nodes, a, b = daemon_pair(
        tmp_path, extra=lambda n: f"group.keys.dir={keys[n]}\ngroup.keys.include=*\n"
    )
    standin = None
    try:
        a.start()
        b.start()
        if "groups" not in a.status():
            pytest.skip("the daemon's status has no groups in this tree (branch gengine)")
        old, new = b"ssh-ed25519 old\n", b"ssh-ed25519 new\n"
        (keys["a"] / "id_host_key").write_bytes(old)
        assert wait_for(lambda: (keys["b"] / "id_host_key").exists(), 15), a.text()
        time.sleep(1.1)  # B's write is newer by the clock
        (keys["b"] / "id_host_key").write_bytes(new)
        _sync(a)
        assert wait_for(lambda: (keys["a"] / "id_host_key").read_bytes() == new, 15), a.text()
        standin = StandIn(a.sock, *uci_and_key(tmp_path, b.addr), RUNNING)
        errors: list[str] = []
        page = open_view(browser, standin.url, errors)
        row = page.locator("#owsync-versions tr.owsync-version[data-group='keys']").first
        row.wait_for(timeout=5000)
        assert row.get_attribute("data-id").startswith("keys:")
        assert row.locator(".owsync-group").inner_text() == "keys"
        assert row.locator(".owsync-path").inner_text() == "id_host_key"
        page.locator("#owsync-group-filter").select_option("keys")
        groups = {r.get_attribute("data-group") for r in
                  page.locator("#owsync-versions tr.owsync-version").all()}  # fmt: skip
        assert groups == {"keys"}
        modal, diff = _diff(page, row)
        assert "-ssh-ed25519 old\n" in diff and "+ssh-ed25519 new\n" in diff, diff
        _restore_from_diff(page, modal)
        assert wait_for(lambda: (keys["a"] / "id_host_key").read_bytes() == old, 10), a.text()
        assert errors == []
    finally:
        if standin:
            standin.close()
        next(nodes, None)  # stops the daemons, by PID
