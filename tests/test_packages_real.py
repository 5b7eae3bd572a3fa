"""The packages as the SDK builds them, installed by the real opkg and apk in
the OpenWrt chroot (opt-in).

scripts/build-packages.sh builds owsync, python3-pyuci and luci-app-owsync
as .ipk and .apk from their recipes (and, given 1.2.0's feed and binary,
owsync 1.2.0's own package); here OpenWrt's opkg (``OWSYNC_OPKG``) and
apk-tools' apk (``OWSYNC_APK``) install them into the chroot of
tests/owrt_chroot.py, whose procd, ubusd and rc.common run their scripts:

- the postinst enables the service; the console script runs;
- configured and started, the daemon registers ``owsync`` on ubus;
- ``opkg remove`` / ``apk del`` stops the daemon, disables the service and
  leaves the edited configuration, the key and the database;
- the keep list sysupgrade reads (``/lib/upgrade/keep.d``) holds the key, the
  database and the version store;
- owsync 1.2.0's package, configured and running, upgraded to this one: the
  same peers and filters under ``main``, the key in its file, 1.2.0's rpcd
  plugin gone, the service enabled and running this owsync;
- on the installed files (the console script and the bytecode, no checkout
  on the path): tests/test_initscript_real.py's admin's day with the init
  script, and tests/test_luci_real.py's checks in LuCI's real runtime with
  the packages installed before uhttpd starts (both from tests/conftest.py;
  the LuCI one also needs OWSYNC_LUCI_ROOT and chromium).

The chroot's python3 is the host's: a ``.pth`` in its dist-packages adds
OpenWrt's site-packages directory (where Py3Package installs) and
OWSYNC_PYBINDINGS (python3-ubus); a base package of the test's own provides
what the chroot has and the feeds would bring (libc, python3-light,
python3-cryptography, libuci, rpcd, ...), so that the package managers check
every other dependency for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    PKG_INSTALL,
    PKG_TOOL,
    initscript_admins_day,
    initscript_fatal_error_logged_once,
    luci_read_only_user,
    luci_settings_save_and_apply,
    luci_status_and_sync_now,
    stage_package_tools,
    wait_for,
)
from conftest import Router as LuciRouter
from conftest import _skip as luci_missing
from owrt_chroot import OpenWrtRoot, skip_reason

from owsync import __version__

REPO = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef" * 4
TOOLS = ("OWSYNC_OPKG", "OWSYNC_APK", "OWSYNC_IPKG_BUILD", "OWSYNC_PYUCI_SDIST",
         "OWSYNC_OWRT_PREFIX", "OWSYNC_OLD_FEED", "OWSYNC_C_BIN")  # fmt: skip
# what the chroot has (the host's Python and its cryptography, OpenWrt's
# libraries and daemons) under the names of the packages that bring them
PROVIDED = ("libc", "python3-light", "python3-logging", "python3-ctypes",
            "python3-cryptography", "python3-ubus", "libuci", "luci-base", "rpcd",
            "libjson-c", "libopenssl")  # fmt: skip


# OpenWrt's sysupgrade and what `sysupgrade -l` sources (base-files)
SYSUPGRADE = ("sbin/sysupgrade", "lib/upgrade/common.sh", "lib/functions/system.sh")


def recipe_var(recipe: Path, name: str) -> str:
    """A ``NAME:=value`` of an OpenWrt recipe (its first)."""
    for line in recipe.read_text().splitlines():
        if line.startswith(f"{name}:="):
            return line.split(":=", 1)[1].strip()
    raise KeyError(f"{recipe}: no {name}")


def test_the_recipes_name_their_sources_by_hash():
    """Each recipe's source is checked by its sha256, none is "skip": owsync's
    commit by PKG_MIRROR_HASH (scripts/build-packages.sh packs that commit as the
    SDK does and compares), pyuci's sdist by PKG_HASH (compared with the sdist)."""
    owsync_mk = REPO / "openwrt/owsync/Makefile"
    assert recipe_var(owsync_mk, "PKG_VERSION") == __version__  # tests/test_openwrt_files.py too
    assert re.fullmatch(r"[0-9a-f]{40}", recipe_var(owsync_mk, "PKG_SOURCE_VERSION"))
    assert re.fullmatch(r"[0-9a-f]{64}", recipe_var(owsync_mk, "PKG_MIRROR_HASH"))
    pyuci_mk = REPO / "openwrt/python-pyuci/Makefile"
    assert re.fullmatch(r"[0-9a-f]{64}", recipe_var(pyuci_mk, "PKG_HASH"))


def missing() -> str | None:
    why = skip_reason()
    if why:
        return why
    absent = [t for t in TOOLS if not os.path.exists(os.environ.get(t, ""))]
    if absent:
        return f"set {', '.join(absent)} (scripts/build-outside.sh; README)"
    tree = Path(os.environ["OWSYNC_OPENWRT_ROOT"])
    lacks = [f for f in SYSUPGRADE if not (tree / f).exists()]
    if lacks:
        return f"OWSYNC_OPENWRT_ROOT lacks {', '.join(lacks)} (scripts/build-outside.sh)"
    tools = [t for t in ("fakeroot", "git", "zstd", "make") if not shutil.which(t)]
    if tools:
        return f"scripts/build-packages.sh needs {', '.join(tools)} (apt-get install)"
    return None


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    why = missing()
    if why:
        pytest.skip(why)
    out = tmp_path_factory.mktemp("packages")
    r = subprocess.run([str(REPO / "scripts/build-packages.sh"), str(out)],
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    base = out / "base"
    _base_packages(base, out)
    return out


def _base_packages(tree: Path, out: Path) -> None:
    """owrt-base: provides what the chroot has, as .ipk and .apk."""
    (tree / "CONTROL").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "etc/owrt-base").write_text("the test's base system\n")
    (tree / "CONTROL/control").write_text(
        "Package: owrt-base\nVersion: 1\nArchitecture: all\n"
        f"Provides: {', '.join(PROVIDED)}\nDescription: what the chroot has\n"
    )
    subprocess.run(["fakeroot", "bash", os.environ["OWSYNC_IPKG_BUILD"], str(tree), str(out)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(tree / "CONTROL")
    subprocess.run([os.environ["OWSYNC_APK"], "mkpkg", "--info", "name:owrt-base",
                    "--info", "version:1", "--info", "arch:noarch",
                    "--info", f"provides:{' '.join(PROVIDED)}",
                    "--files", str(tree), "--output", str(out / "owrt-base-1.apk")],
                   check=True, capture_output=True)  # fmt: skip


def rpcd_files() -> tuple[Path, Path] | None:
    """rpcd and OpenWrt's init script for it, from OWSYNC_LUCI_ROOT."""
    tree = Path(os.environ.get("OWSYNC_LUCI_ROOT", "/nonexistent"))
    rpcd, init = tree / "usr/sbin/rpcd", tree / "etc/init.d/rpcd"
    return (rpcd, init) if rpcd.exists() and init.exists() else None


class Router:
    """The chroot with the package managers and the packages under /pkgs
    (and rpcd, where OpenWrt installs it, when OWSYNC_LUCI_ROOT has it)."""

    def __init__(self, tmp: Path, packages: Path) -> None:
        def prepare(staging: Path) -> None:
            if rpcd_files():
                rpcd, init = rpcd_files()
                shutil.copy(rpcd, staging / "sbin/rpcd")
                shutil.copy(init, staging / "etc/init.d/rpcd")
            stage_package_tools(staging, packages)

        self.root = OpenWrtRoot(tmp, prepare=prepare, owsync=False)
        self.ok, self.sh = self.root.ok, self.root.sh

    def running(self) -> str:
        """The PIDs of processes running an owsync (the C binary or the script)."""
        # (bracketed: the shell running pgrep must not match its own pattern)
        return self.sh("pgrep -f '(^|/)[o]wsync( |$)'").stdout.strip()

    def status(self) -> dict | None:
        r = self.sh("ubus call owsync status")
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None

    def configure_and_start(self, section: str = "main") -> None:
        self.ok(
            f"uci add_list owsync.{section}.peer=127.0.0.2; uci set owsync.{section}.enabled=1;"
            " uci commit owsync; service owsync start"
        )

    def stop(self) -> None:
        self.root.stop()


@pytest.fixture
def router(tmp_path, packages):
    r = Router(tmp_path, packages)
    yield r
    r.stop()


def pm(router: Router, fmt: str, *commands: str) -> str:
    """The package manager of ``fmt``, once per command; their output."""
    return "".join(router.ok(f"{PKG_TOOL[fmt]} {c}", timeout=300) for c in commands)


REMOVE = {"ipk": "remove luci-app-owsync owsync", "apk": "del luci-app-owsync owsync"}


@pytest.mark.parametrize("fmt", ["ipk", "apk"])
def test_install_enable_run_remove(router, fmt):
    out = pm(router, fmt, *PKG_INSTALL[fmt])
    # the postinst enabled the service; the UCI file says disabled: nothing runs
    assert router.sh("test -L /etc/rc.d/S95owsync").returncode == 0, out
    assert router.ok("owsync -V").startswith(f"owsync {__version__}")
    assert router.ok("find /usr/lib -path '*site-packages/owsync*' -name '*.py'") == ""
    assert "owsync/cli.pyc" in router.ok("find /usr/lib -name cli.pyc")
    assert not router.running()
    # set up as the README says, started: the installed daemon serves ubus
    router.ok("owsync genkey > /etc/owsync/key")
    router.configure_and_start()
    assert wait_for(lambda: router.status() is not None, 20), router.ok("logread")
    st = router.status()
    assert st["status"] == "RUNNING" and st["version"] == __version__
    assert st["config"]["peer_count"] == 1 and st["config"]["encryption_enabled"] is True
    router.ok("printf 'config x\\n' > /etc/config/dhcp")  # a change: the database is written
    assert wait_for(lambda: router.sh("test -f /etc/owsync/owsync.db").returncode == 0, 20), (
        router.ok("logread; ls -la /etc/owsync")
    )
    # an edit made here keeps the content it replaced in the version store
    router.ok("printf 'config y\\n' > /etc/config/dhcp")
    assert wait_for(lambda: router.sh("find /etc/owsync/owsync.versions -type f").stdout, 20)
    # what sysupgrade keeps: the key, the database, the version store, the UCI file
    keep = set(router.ok("sysupgrade -l").split())
    assert {"/etc/owsync/key", "/etc/owsync/owsync.db", "/etc/config/owsync"} <= keep, keep
    stored = set(router.ok("find /etc/owsync/owsync.versions -type f").split())
    assert stored and stored <= keep, (stored, keep)
    # removed: stopped, disabled, the edited configuration, key and database stay
    pm(router, fmt, REMOVE[fmt])
    assert wait_for(lambda: not router.running(), 15), router.ok("ps w")
    assert router.sh("test -e /etc/rc.d/S95owsync || test -e /usr/bin/owsync").returncode != 0
    assert "127.0.0.2" in router.ok("cat /etc/config/owsync")
    assert router.ok("cat /etc/owsync/key").strip() and router.ok("ls /etc/owsync/owsync.db")


OLD_INSTALL = {
    "ipk": (PKG_INSTALL["ipk"][0], "install /pkgs/1.2.0/owsync_1.2.0-1_x86_64.ipk"),
    "apk": (PKG_INSTALL["apk"][0], "add /pkgs/1.2.0/owsync-1.2.0-r1.apk"),
}
UPGRADE = {
    "ipk": f"install /pkgs/python3-pyuci_*.ipk /pkgs/owsync_{__version__}-*.ipk",
    "apk": f"add /pkgs/python3-pyuci-*.apk /pkgs/owsync-{__version__}-*.apk",
}


@pytest.mark.parametrize("fmt", ["ipk", "apk"])
def test_upgrade_from_owsync_1_2_0s_package(router, fmt):
    if rpcd_files() is None:
        pytest.skip("needs rpcd and its init script: OWSYNC_LUCI_ROOT (scripts/build-outside.sh)")
    pm(router, fmt, *OLD_INSTALL[fmt])
    assert router.sh("test -x /usr/libexec/rpcd/owsync").returncode == 0
    # rpcd serves 1.2.0's plugin as the `owsync` object (its `pgrep -o owsync`
    # finds the plugin script itself, so it may well say RUNNING already)
    router.ok("/etc/init.d/rpcd start")
    assert wait_for(lambda: (router.status() or {}).get("status") in ("RUNNING", "STOPPED"), 15), (
        router.sh("ubus list; ps w; logread").stdout
    )
    # an admin's 1.2.0 setup: key in UCI, a peer, filters, enabled, running
    router.ok(f"uci set owsync.general.key={KEY}; uci add_list owsync.general.include='*'")
    router.configure_and_start("general")
    assert wait_for(lambda: router.running(), 10), router.ok("logread")
    old_pid = router.running()
    assert "version" not in router.status()  # the plugin's answer, not a daemon's
    out = pm(router, fmt, UPGRADE[fmt])
    # 1.2.0's plugin is gone; the settings are under main, the key in its file
    assert router.sh("test -e /usr/libexec/rpcd/owsync").returncode != 0, out
    assert router.ok("uci -q get owsync.main.peer").split() == ["127.0.0.2"]
    assert router.ok("uci -q get owsync.main.include").split() == ["*"]
    assert router.ok("uci -q get owsync.main.exclude").split() == ["network", "system", "owsync"]
    assert router.sh("uci -q get owsync.main.key").returncode != 0
    assert router.sh("uci -q get owsync.general").returncode != 0
    assert router.ok("cat /etc/owsync/key").strip() == KEY
    assert router.ok("stat -c %a /etc/owsync/key").strip() == "600"
    assert router.sh("ls /etc/uci-defaults/50-owsync-from-1.2").returncode != 0  # done, deleted
    # enabled for the next boot, and this owsync runs with the same peer: the
    # `owsync` object is the daemon's, rpcd (reloaded) no longer claims it
    assert router.sh("test -L /etc/rc.d/S95owsync").returncode == 0, router.ok("ls /etc/rc.d")
    assert wait_for(lambda: (router.status() or {}).get("version") == __version__, 30), router.ok(
        "logread"
    ) + router.ok("ps w")
    st = router.status()
    assert [p["address"] for p in st["peers"]] == ["127.0.0.2"] and st["encryption"] is True
    assert old_pid not in router.running().split()


def installed_from_package(root: OpenWrtRoot) -> None:
    """What runs is the package's: its console script, its bytecode in OpenWrt's
    site-packages, no checkout on the interpreter's path."""
    assert root.ok("head -1 /usr/bin/owsync").strip() == "#!/usr/bin/python3"
    where = root.ok("cd / && python3 -c 'import owsync; print(owsync.__file__)'").strip()
    assert where.startswith("/usr/lib/python3"), where
    assert where.endswith("/site-packages/owsync/__init__.pyc"), where


@pytest.mark.parametrize("fmt", ["ipk", "apk"])
def test_the_init_script_as_installed(router, fmt):
    """tests/test_initscript_real.py's steps on the files opkg and apk installed."""
    pm(router, fmt, *PKG_INSTALL[fmt])
    installed_from_package(router.root)
    # OpenWrt's reload_config signals only the files it had seen at its previous
    # run (boot's): /etc/config/owsync, new since, counts from its next run on, as
    # on a router after the install (LuCI's apply signals the package directly)
    router.ok("reload_config")
    initscript_admins_day(router.root)
    initscript_fatal_error_logged_once(router.root)


@pytest.mark.parametrize("fmt", ["ipk", "apk"])
def test_luci_as_installed(tmp_path, packages, browser, fmt):
    """tests/test_luci_real.py's checks in LuCI's real runtime (Status and "Sync
    now", a read-only user, Settings with Save & Apply), luci-app-owsync and
    owsync installed by opkg and apk before uhttpd starts."""
    why = luci_missing()
    if why:
        pytest.skip(why)
    rt = LuciRouter(tmp_path, packages, fmt)
    try:
        installed_from_package(rt.r)
        listed = {"ipk": "opkg files luci-app-owsync", "apk": "apk info -L luci-app-owsync"}
        assert "view/owsync/status.js" in rt.r.ok(listed[fmt])
        rt.ready()
        luci_status_and_sync_now(rt, browser)
        luci_read_only_user(rt, browser)
        luci_settings_save_and_apply(rt, browser)
    finally:
        rt.r.stop()
