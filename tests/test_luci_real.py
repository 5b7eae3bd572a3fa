"""luci-app-owsync in LuCI's real runtime, driven in headless Chromium (opt-in).

The router is tests/owrt_chroot.py's OpenWrt root (rc.common, procd, ubusd,
logd, uci) with LuCI's runtime laid over it from ``OWSYNC_LUCI_ROOT``: uhttpd
(ubus and ucode handlers), rpcd (file, ucode, rpcsys plugins), ucode with its
modules, luci-base and luci-theme-bootstrap as the LuCI feed installs them.
This app goes in with ``make install DESTDIR=<root>``, and owsync runs from
its init script under procd, reading /etc/config/owsync and /etc/owsync/key;
a plain ``owsync listen`` in the same root stands for the other router.
The chroot keeps the host's network, so the browser reaches uhttpd on a free
loopback port.  Skipped, with the reason, when a piece is missing.
The checks are tests/conftest.py's ``luci_*``: tests/test_packages_real.py
runs them on the files opkg and apk installed instead.
"""

from __future__ import annotations

import re

import pytest
from conftest import (
    KEY,
    Router,
    Session,
    _skip,
    free_port,
    luci_read_only_user,
    luci_settings_save_and_apply,
    luci_status_and_sync_now,
    wait_for,
)

from owsync.core.examples import EXAMPLES

pytestmark = pytest.mark.skipif(_skip() is not None, reason=_skip() or "")


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    rt = Router(tmp_path_factory.mktemp("luci"))
    try:
        rt.ready()
        yield rt
    finally:
        rt.r.stop()


def test_status_shows_peers_and_sync_now_brings_a_file(router, browser):
    luci_status_and_sync_now(router, browser)


def test_a_read_only_user_sees_the_status_and_cannot_sync(router, browser):
    luci_read_only_user(router, browser)


def test_settings_add_a_peer_save_and_apply_reaches_the_same_daemon(router, browser):
    luci_settings_save_and_apply(router, browser)


def _example():
    """A shipped example to add: the dropbear one, else one outside /etc itself."""
    dropbear = [e for e in EXAMPLES if "dropbear" in e["name"] or "dropbear" in e["dir"]]
    return (dropbear or [e for e in EXAMPLES if e["dir"].rstrip("/") != "/etc"] or EXAMPLES)[0]


def _a_file_it_syncs(pattern: str) -> str:
    """A relative path a glob of the example matches."""
    return re.sub(r"\[[^]]*\]", "x", pattern).replace("*", "test").replace("?", "x")


def test_settings_add_a_shipped_group_save_and_apply_and_status_shows_it_synced(router, browser):
    """A ready choice of Settings adds the group, Save & Apply starts it in the
    running daemon, and the Status page shows it synced with a peer that has it
    (a daemon of ours in the same root: `owsync listen` serves main alone); then
    History restores a version of that group."""
    ex = _example()
    name, pid = ex["name"], router.status()["pid"]
    rel = _a_file_it_syncs(ex["include"][0])
    port = free_port()
    peer = f"127.0.0.1:{port}"
    router.r.ok(f"mkdir -p {ex['dir']}/$(dirname {rel}) && echo 'here' > {ex['dir']}/{rel}")
    conf = "\n".join([
        "bind_host=127.0.0.1", f"port={port}", "sync_dir=/srv/peer3", "database=/srv/peer3.db",
        "control_socket=/srv/peer3.sock", f"encryption_key={KEY}", "poll_interval=600",
        "include=*", f"peer=127.0.0.1:{router.port}", "ubus_socket=/nonexistent/ubus.sock",
        f"group.{name}.dir=/srv/peer3-{name}",
        *(f"group.{name}.include={p}" for p in ex["include"]),
        *(f"group.{name}.exclude={p}" for p in ex["exclude"]),
    ])  # fmt: skip
    router.r.ok(f"mkdir -p /srv/peer3 /srv/peer3-{name} && cat > /srv/peer3.conf <<'EOF'\n{conf}\n"
                "EOF\nchmod 600 /srv/peer3.conf\n(owsync daemon -c /srv/peer3.conf --no-syslog"
                " </dev/null >/srv/peer3.log 2>&1 &)")  # fmt: skip
    assert wait_for(lambda: router.r.sh("test -S /srv/peer3.sock").returncode == 0, 20), (
        router.r.sh("cat /srv/peer3.log").stdout
    )

    s = Session(browser, router, "root")
    s.open("settings")
    dyn = s.page.locator("[data-name='peer'] .cbi-dynlist, #cbid\\.owsync\\.main\\.peer").first
    dyn.locator("input[type=text]").last.fill(peer)
    dyn.locator(".cbi-button-add").click()
    button = s.page.locator(f"#owsync-examples tr[data-example='{name}'] button")
    assert button.inner_text() == "Add"
    button.click()
    s.page.locator(f".cbi-section-table-row[data-sid='{name}']").wait_for(timeout=15000)
    assert button.is_disabled()
    s.screenshot("settings-group")
    s.page.locator(".cbi-page-actions").get_by_text("Save & Apply").click()
    s.page.wait_for_function(
        "() => /Configuration changes applied/.test(document.body.innerText)", timeout=60000
    )
    uci = router.r.ok("cat /etc/config/owsync")
    assert f"config group '{name}'" in uci and f"option dir '{ex['dir']}'" in uci, uci

    def group_state():
        st = router.status() or {}
        g = next((g for g in st.get("groups", []) if g["name"] == name), None)
        return g and g["peers"].get(peer)

    assert wait_for(lambda: group_state() == "synced", 60), (
        router.status(),
        router.r.sh("/sbin/logread -e owsync").stdout,
    )
    assert router.status()["pid"] == pid  # a reload, not a restart
    assert router.r.ok(f"cat /srv/peer3-{name}/{rel}") == "here\n"
    s.open("status")
    label = s.page.locator(
        f"#owsync-groups tr[data-group='{name}'] .owsync-group-peer[data-peer='{peer}'] .label"
    )
    label.wait_for(timeout=15000)
    assert label.text_content() == "synced"  # (the theme shows labels in capitals)
    row = s.page.locator(f"#owsync-groups tr[data-group='{name}']")
    assert row.locator(".owsync-group-dir").inner_text() == ex["dir"]
    assert row.locator(".owsync-group-state .label").text_content() == "Syncing"
    s.screenshot("status-group")

    # the peer's newer file replaces ours: History keeps ours under the group, and
    # luci.owsync restores it as GROUP:ID (a string id, through rpcd and uhttpd)
    router.r.ok(f"echo 'there' > /srv/peer3-{name}/{rel}")
    assert wait_for(lambda: router.r.sh(f"cat {ex['dir']}/{rel}").stdout == "there\n", 30)
    s.open("history")
    s.page.locator("#owsync-group-filter").select_option(name)
    row = s.page.locator(f"#owsync-versions tr.owsync-version[data-group='{name}']").first
    row.wait_for(timeout=15000)
    assert row.get_attribute("data-id").startswith(f"{name}:")
    assert row.locator(".owsync-path").inner_text() == rel
    row.locator("button.owsync-restore").click()
    s.page.locator("button.owsync-restore-confirm").click()
    assert wait_for(lambda: router.r.sh(f"cat {ex['dir']}/{rel}").stdout == "here\n", 20), (
        s.page.inner_text("body")
    )
    assert wait_for(lambda: router.r.sh(f"cat /srv/peer3-{name}/{rel}").stdout == "here\n", 30)
    s.screenshot("history-group")
    assert s.errors == [], s.errors
    assert not any(KEY in b for b in s.bodies)
