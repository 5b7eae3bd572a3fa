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
from conftest import initscript_admins_day, initscript_fatal_error_logged_once
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
