"""openwrt/owsync/files/etc/init.d/owsync under OpenWrt's real rc.common, procd, ubusd, logd, uci,
jsonfilter and validate_data, with busybox ash as /bin/sh, typed as a router's
admin types it (tests/owrt_chroot.py builds the root; opt-in, see the README).

The steps are the admin's, in order, on one router; a second owsync node in the
same network namespace (a plain `owsync listen` on another port of loopback)
stands for the other router.  They are tests/conftest.py's
``initscript_admins_day``: tests/test_packages_real.py takes the same steps on
the files that opkg and apk installed from the packages.
"""

from __future__ import annotations

import pytest
from conftest import (
    INIT_PEER_PORT,
    KEY,
    initscript_admins_day,
    initscript_fatal_error_logged_once,
    owrt_instances,
    owrt_logread,
    owrt_reloads,
    owrt_running_pid,
    owrt_status,
    wait_for,
)
from owrt_chroot import OpenWrtRoot, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    r = OpenWrtRoot(tmp_path_factory.mktemp("router"))
    yield r
    r.stop()


def test_the_admins_day_with_the_init_script(router):
    initscript_admins_day(router)


def test_a_fatal_error_at_start_is_logged_once(router):
    initscript_fatal_error_logged_once(router)


def test_group_sections_are_validated_like_main(router):
    """A `config group` section: a valid one starts with main (the daemon
    reads it, its missing dir a warning); a bad value in one is reported by
    validate_data and names the group, and no instance runs, as for main."""
    r = router
    r.ok("/etc/init.d/owsync stop; uci set owsync.main.enabled=1; uci commit owsync")
    r.ok(f"mkdir -p /etc/owsync; printf '%s\\n' {KEY} > /etc/owsync/key")
    r.ok(f"uci -q get owsync.main.peer || uci add_list owsync.main.peer=127.0.0.1:{INIT_PEER_PORT}")
    r.ok("uci commit owsync; uci set owsync.keys=group; uci set owsync.keys.dir=/etc/dropbear.test;"
         " uci add_list owsync.keys.include='dropbear_*_host_key';"
         " uci add_list owsync.keys.restart=dropbear; uci commit owsync")  # fmt: skip
    res = r.sh("/etc/init.d/owsync start")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert wait_for(lambda: owrt_running_pid(r) is not None, 20), owrt_logread(r)
    waits = "group keys: /etc/dropbear.test does not exist; the group waits until it does"
    assert wait_for(lambda: waits in owrt_logread(r), 20), owrt_logread(r)
    pid = owrt_running_pid(r)
    # a service name that is no init script's: the script refuses, naming the group
    r.ok("uci add_list owsync.keys.restart='dropbear;reboot'; uci commit owsync")
    res = r.sh("/etc/init.d/owsync restart")
    assert "owsync.keys.restart[1]=dropbear;reboot validates as list(hostname) with false" in (
        res.stderr
    ), res.stderr
    assert "owsync: invalid configuration in /etc/config/owsync (group keys)" in res.stderr
    assert wait_for(lambda: owrt_running_pid(r) is None, 20)
    r.ok("uci del_list owsync.keys.restart='dropbear;reboot'; uci set owsync.keys.enabled=maybe;"
         " uci commit owsync")  # fmt: skip
    res = r.sh("/etc/init.d/owsync start")
    assert "owsync.keys.enabled=maybe validates as bool with false" in res.stderr, res.stderr
    assert owrt_instances(r) == {}
    # an unnamed group section (`uci add`): refused with the command that names it
    r.ok("uci set owsync.keys.enabled=0; uci add owsync group;"
         " uci set owsync.@group[-1].dir=/etc/x; uci commit owsync")  # fmt: skip
    res = r.sh("/etc/init.d/owsync start")
    assert res.stderr == (
        "owsync: a group section has no name: uci rename owsync.@group[N]=NAME; uci commit owsync\n"
    ), res.stderr
    assert owrt_instances(r) == {}
    r.ok("uci delete owsync.@group[-1]; uci commit owsync")
    # valid again: it starts; then the group goes and a reload keeps the process
    r.ok("uci set owsync.keys.enabled=0; uci commit owsync; /etc/init.d/owsync start")
    assert wait_for(lambda: owrt_running_pid(r) not in (None, pid), 20), owrt_logread(r)
    assert wait_for(lambda: owrt_status(r) is not None, 20), owrt_logread(r)
    pid = owrt_running_pid(r)
    before = owrt_reloads(r)
    r.ok("uci delete owsync.keys; uci commit owsync; service owsync reload")
    assert wait_for(lambda: owrt_reloads(r) > before, 20), owrt_logread(r)
    assert owrt_running_pid(r) == pid
    r.ok("/etc/init.d/owsync stop; uci set owsync.main.enabled=0; uci commit owsync")
    assert wait_for(lambda: owrt_instances(r) == {})
