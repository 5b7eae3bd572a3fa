"""The upgrade from owsync 1.2.0's OpenWrt package: its UCI section 'general'
(key in UCI) becomes 'main' with the key in /etc/owsync/key, by the package's
uci-defaults script, run with OpenWrt's real ``uci`` (OWSYNC_UCI) and busybox
``ash`` when the OpenWrt tree has one (OWSYNC_OPENWRT_ROOT), else ``sh``.

The script runs in a mount namespace of the test's own where ``/etc`` and
``/tmp/.uci`` (uci's staging) are directories of the test, so that it reads
and writes exactly the paths it has on a router. The package-level upgrade (opkg and apk) is
tests/test_packages_real.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "openwrt/owsync/files/etc/uci-defaults/50-owsync-from-1.2"
UCI = os.environ.get("OWSYNC_UCI", "")
KEY = "0123456789abcdef" * 4

# /etc/config/owsync as 1.2.0's package ships it, then edited by an admin
OLD_CONFIG = f"""config owsync 'general'
	option enabled '1'
	option host '::'
	option port '4321'
	option dir '/etc/config'
	option db '/etc/owsync/owsync.db'
	option key '{KEY}'
	option poll_interval '30'
	list peer '192.168.1.2'
	list peer 'fd00::2'
	list include '*'
	list exclude 'network'
	list exclude 'system'
	list exclude 'owsync'
"""


def shell() -> str:
    tree = os.environ.get("OWSYNC_OPENWRT_ROOT", "")
    busybox = Path(tree, "bin/busybox") if tree else None
    return f"{busybox} ash" if busybox and busybox.exists() else "sh"


@pytest.fixture
def router(tmp_path):
    if not os.access(UCI, os.X_OK):
        pytest.skip("needs OpenWrt's uci: set OWSYNC_UCI (see README)")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    etc, tmp, bin_ = tmp_path / "etc", tmp_path / "tmp", tmp_path / "bin"
    for d in (etc / "config", etc / "uci-defaults", tmp / ".uci", bin_):
        d.mkdir(parents=True)
    os.symlink(UCI, bin_ / "uci")
    return tmp_path


def run(root: Path) -> subprocess.CompletedProcess:
    """The script, as default_postinst runs it (sourced in a subshell, from its
    directory), with /etc and /tmp/.uci the test's; its status is the subshell's."""
    shutil.copy(SCRIPT, root / "etc/uci-defaults" / SCRIPT.name)
    Path("/tmp/.uci").mkdir(exist_ok=True)  # the mount point (a router has it)
    inner = (
        f"mount --bind {root}/etc /etc && mount --bind {root}/tmp/.uci /tmp/.uci && "
        f'export PATH={root}/bin:"$PATH" && cd /etc/uci-defaults && '
        f"{shell()} -c '( . ./{SCRIPT.name} ) && rm -f ./{SCRIPT.name}'"
    )
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def show(root: Path) -> list[str]:
    r = subprocess.run([UCI, "-c", str(root / "etc/config"), "show", "owsync"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_general_becomes_main_and_the_key_moves_to_its_file(router):
    (router / "etc/config/owsync").write_text(OLD_CONFIG)
    r = run(router)
    assert r.returncode == 0, r.stderr
    assert "key moved from UCI to /etc/owsync/key" in r.stdout
    assert not (router / "etc/uci-defaults" / SCRIPT.name).exists()  # done: deleted
    assert show(router) == [
        "owsync.main=owsync",
        "owsync.main.enabled='1'",
        "owsync.main.host='::'",
        "owsync.main.port='4321'",
        "owsync.main.dir='/etc/config'",
        "owsync.main.db='/etc/owsync/owsync.db'",
        "owsync.main.poll_interval='30'",
        "owsync.main.peer='192.168.1.2' 'fd00::2'",
        "owsync.main.include='*'",
        "owsync.main.exclude='network' 'system' 'owsync'",
    ]
    key = router / "etc/owsync/key"
    assert key.read_text() == KEY + "\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert KEY not in (router / "etc/config/owsync").read_text()
    # nothing left staged (uci commit leaves an empty delta file)
    assert all(f.stat().st_size == 0 for f in (router / "tmp/.uci").iterdir())
    # a second run (at the next boot, say) changes nothing
    before = (router / "etc/config/owsync").read_text()
    assert run(router).returncode == 0
    assert (router / "etc/config/owsync").read_text() == before
    assert key.read_text() == KEY + "\n"


def test_the_placeholder_key_of_the_shipped_file_is_dropped_not_moved(router):
    (router / "etc/config/owsync").write_text(
        OLD_CONFIG.replace(KEY, "GENERATE_WITH_OWSYNC_GENKEY").replace("'1'", "'0'", 1)
    )
    r = run(router)
    assert r.returncode == 0, r.stderr
    assert not (router / "etc/owsync/key").exists()
    lines = show(router)
    assert "owsync.main.enabled='0'" in lines
    assert not [x for x in lines if ".key=" in x]


def test_a_key_file_already_there_wins(router):
    other = "f" * 64
    (router / "etc/owsync").mkdir()
    (router / "etc/owsync/key").write_text(other + "\n")
    (router / "etc/config/owsync").write_text(OLD_CONFIG)
    r = run(router)
    assert r.returncode == 0, r.stderr
    assert (router / "etc/owsync/key").read_text() == other + "\n"
    assert not [x for x in show(router) if ".key=" in x]


def test_a_main_beside_general_is_replaced_by_general(router):
    (router / "etc/config/owsync").write_text(
        OLD_CONFIG + "\nconfig owsync 'main'\n\toption enabled '0'\n\tlist exclude 'dropbear'\n"
    )
    assert run(router).returncode == 0
    lines = show(router)
    assert lines[:2] == ["owsync.main=owsync", "owsync.main.enabled='1'"]
    assert "owsync.main.exclude='network' 'system' 'owsync'" in lines
    assert not [x for x in lines if "general" in x]


def test_a_configuration_of_this_owsync_is_left_alone(router):
    shipped = (REPO / "openwrt/owsync/files/etc/config/owsync").read_text()
    (router / "etc/config/owsync").write_text(shipped)
    r = run(router)
    assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
    assert (router / "etc/config/owsync").read_text() == shipped
    assert not (router / "etc/owsync").exists()


def test_a_key_that_cannot_be_written_stays_in_uci(router):
    (router / "etc/config/owsync").write_text(OLD_CONFIG)
    (router / "etc/owsync").write_text("a file where the directory should be\n")
    r = run(router)
    assert r.returncode != 0
    assert (router / "etc/uci-defaults" / SCRIPT.name).exists()  # kept: tried again at boot
    lines = show(router)
    assert f"owsync.general.key='{KEY}'" in lines and "owsync.general=owsync" in lines
