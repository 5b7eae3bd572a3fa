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

import pytest
from conftest import (
    Router,
    _skip,
    luci_read_only_user,
    luci_settings_save_and_apply,
    luci_status_and_sync_now,
)

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
