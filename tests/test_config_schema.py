"""The settings schema (owsync.core.settings) against every place a setting lives.

Config's defaults, the key=value file, UCI, the command line and its help
come from the schema; the init script's validation list and LuCI's fields are
written by hand, and these tests hold them to it: the list verbatim, LuCI's
fields as its own render() defines them (run under node), and each datatype
against OpenWrt's real validate_data where it is available.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import (
    KEY,
    DaemonNode,
    base_env,
    free_port,
    owsync_cmd,
    read_uci,
    refused_in_one_line,
    wait_for,
)

from owsync import cli
from owsync.core.settings import (
    BOOL,
    BY_KEY,
    COMPAT_CLAMP,
    DIR,
    GROUP_BY_UCI,
    HOST,
    INT,
    PATH,
    PATTERN,
    PEER,
    SERVICE,
    SETTINGS,
    BadValue,
    Setting,
)
from owsync.core.settings import (
    KEY as KEY_KIND,
)
from owsync.openwrt.uci_config import (
    OPTIONS,
    config_from_section,
    config_from_sections,
    group_validation_spec,
    validation_spec,
)
from owsync.service.config import Config, ConfigError, load_file, parse_text
from owsync.service.log import syslog_available

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "openwrt/owsync/files/etc/init.d/owsync"
UCI_DEFAULT = ROOT / "openwrt/owsync/files/etc/config/owsync"
VIEWS = ROOT / "luci/luci-app-owsync/htdocs/luci-static/resources/view/owsync"
FIELDS_JS = ROOT / "tests/luci/form-fields.mjs"

# owsync 1.2.0's keys (its config.c): their names and meaning stay
KEYS_120 = {"bind_host", "port", "sync_dir", "database", "encryption_key", "plain_mode",
            "poll_interval", "log_level", "peer", "include", "exclude"}  # fmt: skip


def good_value(s: Setting, tmp_path: Path) -> str:
    return {
        BOOL: "1", INT: str(s.hi), HOST: "127.0.0.1", DIR: str(tmp_path), PATH: "/tmp/x",
        KEY_KIND: KEY, PEER: "10.0.0.1:5000,10.0.0.2", PATTERN: "a*", SERVICE: "dropbear",
    }[s.kind]  # fmt: skip


def bad_values(s: Setting) -> list[str]:
    return {
        BOOL: ["maybe", "2"], INT: ["x", "1.5", str((s.hi or 0) + 1)], HOST: ["a b"],
        DIR: [""], PATH: [""], KEY_KIND: ["abc"], PEER: ["10.0.0.1,", "h:0"], PATTERN: [""],
        SERVICE: ["", "..", ".", "a/b", "a b", "a..b", "../x", "x;y"],
    }[s.kind]  # fmt: skip


MAIN_SETTINGS = [s for s in SETTINGS if not s.group_only]
GROUP_ONLY = [s for s in SETTINGS if s.group_only]


def group_text(s: Setting, value: str, tmp_path: Path) -> str:
    """A key=value file with a group whose option ``s`` is ``value``."""
    lines = [f"group.g.dir={tmp_path}", "group.g.include=a"]
    return "\n".join([*lines, f"group.g.{s.uci}={value}"]) + "\n"


def group_section(s: Setting, value: str, tmp_path: Path) -> list:
    main = ("main", "owsync", {"dir": str(tmp_path / "m")})
    return [main, ("g", "group", {"dir": str(tmp_path), s.uci: value})]


# --- Config, the key=value file, UCI, the command line: one schema -------------------


def test_config_holds_every_setting_with_the_schema_default():
    assert set(Config.__annotations__) == {s.attr for s in MAIN_SETTINGS}
    cfg, ucfg = Config(), config_from_section({}, "owsync.main")
    for s in MAIN_SETTINGS:
        assert getattr(cfg, s.attr) == (list(s.default) if s.multi else s.default), s.attr
        uci_default = s.uci_default_value()
        assert getattr(ucfg, s.attr) == (list(uci_default) if s.multi else uci_default), s.attr
    assert ucfg.sync_dir == "/etc/config" and ucfg.database == "/etc/owsync/owsync.db"
    assert set(BY_KEY) >= KEYS_120
    assert set(OPTIONS) == {s.uci for s in MAIN_SETTINGS if s.uci}
    # a secret has no flag; the daemon's settings per group are known already
    assert all(not s.flags for s in SETTINGS if s.secret)
    per_group = {s.attr for s in SETTINGS if s.per_group}
    assert per_group == {"enabled", "sync_dir", "include", "exclude", "reload", "restart"}
    # a group's own settings: in no main place (file keys, main's UCI, flags)
    assert {s.attr for s in GROUP_ONLY} == {"reload", "restart"}
    assert all(s.per_group and s.multi and not s.flags for s in GROUP_ONLY)
    assert not {s.uci for s in GROUP_ONLY} & (set(OPTIONS) | set(BY_KEY))
    assert set(GROUP_BY_UCI) == {"enabled", "dir", "include", "exclude", "reload", "restart"}
    # a group's defaults are the schema's, as a Group holds them
    (g,) = parse_text("group.g.dir=/srv\n").groups
    for s in SETTINGS:
        if s.per_group and s.attr != "sync_dir":
            assert getattr(g, s.attr) == (tuple(s.default) if s.multi else s.default), s.attr


def test_every_setting_reads_the_same_from_the_file_uci_and_the_command_line(tmp_path):
    for s in GROUP_ONLY:  # in a group: group.NAME.OPTION= and config group sections
        value = good_value(s, tmp_path)
        (g,) = parse_text(group_text(s, value, tmp_path)).groups
        assert getattr(g, s.attr) == (s.parse(value),)
        (ug,) = config_from_sections(group_section(s, value, tmp_path)).groups
        assert getattr(ug, s.attr) == (s.parse(value),)
    for s in MAIN_SETTINGS:
        value = good_value(s, tmp_path)
        from_file = getattr(parse_text(f"{s.file_key}={value}\n"), s.attr)
        assert from_file == (s.parse(value) if not s.multi else [s.parse(value)]), s.attr
        if s.uci:
            assert getattr(config_from_section({s.uci: value}, "owsync.main"), s.attr) == from_file
        if s.flags:
            opts = cli.parse_args(["listen", s.flags[-1]] + ([] if s.kind == BOOL else [value]))
            assert getattr(cli.build_config(opts), s.attr) == from_file, s.attr


def test_a_bad_value_is_one_error_naming_the_place_the_setting_and_the_range(tmp_path):
    for s in GROUP_ONLY:
        for bad in bad_values(s):
            with pytest.raises(ConfigError) as err:
                parse_text(group_text(s, bad, tmp_path), "f.conf")
            assert str(err.value) == (
                f"f.conf:3: bad value for group.g.{s.uci}: {bad!r} (expected {s.expected()})"
            )
            with pytest.raises(ConfigError) as uci_err:
                config_from_sections(group_section(s, bad, tmp_path), path="/c/owsync")
            assert str(uci_err.value) == (
                f"/c/owsync: bad value for owsync.g.{s.uci}: {bad!r} (expected {s.expected()})"
            )
        # and never main's: one line saying where it goes
        for text, source in ((f"{s.uci}=x\n", "f.conf:1"), (None, "/c/owsync")):
            with pytest.raises(ConfigError) as err:
                if text:
                    parse_text(text, "f.conf")
                else:
                    config_from_section({s.uci: "x"}, "owsync.main", path="/c/owsync")
            assert str(err.value).startswith(f"{source}: ") and "config group" in str(err.value)
    for s in MAIN_SETTINGS:
        for bad in bad_values(s):
            shown = "(not shown)" if s.secret else repr(bad)
            try:
                cfg = parse_text(f"{s.file_key}={bad}\n", "f.conf")
            except ConfigError as exc:
                assert not s.compat, (s.attr, bad)  # 1.2.0's keys that it tolerated
                message = str(exc)
                assert message.startswith(f"f.conf:1: bad value for {s.file_key}: {shown} (")
                assert s.expected() in message and "\n" not in message
                if s.secret:
                    assert bad not in message
            else:  # only 1.2.0's own leniency: a warning, and 1.2.0's value
                assert s.compat, (s.attr, bad)
                (warning,) = cfg.warnings
                assert warning.startswith(f"f.conf:1: bad value for {s.file_key}: {shown} (")
                assert s.expected() in warning and "as owsync 1.2.0 does" in warning
                clamped = s.compat == COMPAT_CLAMP and bad.isdigit()
                assert getattr(cfg, s.attr) == (s.hi if clamped else s.default)
            if s.uci:
                with pytest.raises(ConfigError) as uci_err:
                    config_from_section({s.uci: bad}, "owsync.main", path="/c/owsync")
                assert str(uci_err.value).startswith(
                    f"/c/owsync: bad value for owsync.main.{s.uci}: {shown} ("
                )
            if s.flags and s.kind != BOOL:
                opts = cli.parse_args(["listen", s.flags[-1], bad])
                with pytest.raises(cli.UsageError, match=re.escape(s.expected())):
                    cli.build_config(opts)


def daemon_refuses(tmp_path: Path, line: str) -> str:
    """The daemon's one error line on a file with ``line`` added; nothing written."""
    conf = tmp_path / "bad.conf"
    conf.write_text(
        f"sync_dir={tmp_path}\nplain_mode=1\npeer=127.0.0.1:1\ninclude=*\n"
        f"database={tmp_path / 'db'}\ncontrol_socket={tmp_path / 's'}\n{line}\n"
    )
    return refused_in_one_line("daemon", "-c", str(conf), writes_none=[tmp_path / "db"])


def test_the_daemon_refuses_a_bad_value_in_one_line(tmp_path):
    conf = tmp_path / "bad.conf"
    for s in SETTINGS:
        if s.kind != INT or s.compat:
            continue
        bad = str(s.hi + 1)
        line = daemon_refuses(tmp_path, f"{s.file_key}={bad}")
        assert line.endswith(
            f"{conf}:7: bad value for {s.file_key}: '{bad}' (expected {s.expected()})"
        ), (s.attr, line)


def test_owsync_120s_own_config_files_still_load(tmp_path):
    """The fixtures of 1.2.0's configuration suite (test_config.sh, which needs
    nc), each loaded by `owsync listen -c` as that suite does: it listens."""
    suite = os.environ.get("OWSYNC_C_SUITE")
    if not suite:
        pytest.skip("set OWSYNC_C_SUITE to the owsync 1.2.0 source tree")
    fixtures = sorted((Path(suite) / "tests/fixtures").glob("*.conf"))
    assert len(fixtures) >= 10
    # what 1.2.0's parser makes of the odd ones (config.c)
    expected = {
        "invalid_int.conf": {"poll_interval": 60, "log_level": 2},
        "log_level_bounds.conf": {"log_level": 3},
        "whitespace.conf": {"bind_host": "0.0.0.0", "port": 4321, "include": ["*"]},
        "complete.conf": {"poll_interval": 120, "log_level": 3, "port": 5000},
        "plain_mode_true.conf": {"plain_mode": True},
    }
    d = tmp_path / "d"
    d.mkdir()
    for f in fixtures:
        cfg = load_file(str(f))
        for attr, value in expected.get(f.name, {}).items():
            assert getattr(cfg, attr) == value, (f.name, attr)
        port = free_port()
        plain = [] if cfg.encryption_key else ["--plain"]
        proc = subprocess.Popen(
            owsync_cmd("listen", "-H", "127.0.0.1", "-P", str(port), "-c", str(f), *plain,
                       "--dir", str(d), "--db", str(tmp_path / "db")),
            env=base_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert wait_for(lambda p=port, c=proc: accepts(p) or c.poll() is not None, 20)
            assert proc.poll() is None, (f.name, proc.communicate()[1])
        finally:
            proc.terminate()
            proc.wait(15)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- the init script ------------------------------------------------------------------


def test_the_init_scripts_validation_list_is_the_schemas():
    body = re.search(r"validate_owsync_section\(\) \{\n(.*?)\n\}", INIT.read_text(), re.S)
    assert body, "no validate_owsync_section in the init script"
    listed = re.findall(r"'([^']+)'", body.group(1))
    assert listed == validation_spec()
    spec = dict(item.split(":", 1) for item in listed)
    assert spec["log_level"] == "and(uinteger,range(0,3)):2"  # not clamped here, not there
    assert "enabled:bool:1" in listed


def test_the_init_scripts_group_validation_list_is_the_schemas():
    body = re.search(r"validate_owsync_group\(\) \{\n(.*?)\n\}", INIT.read_text(), re.S)
    assert body, "no validate_owsync_group in the init script"
    assert "uci_load_validate owsync group " in body.group(1)
    listed = re.findall(r"'([^']+)'", body.group(1))
    assert listed == group_validation_spec()
    # every option of a group, with the schema's datatype (a group's dir may be missing)
    assert [item.split(":")[0] for item in listed] == list(GROUP_BY_UCI)
    for item in listed:
        name, datatype = item.split(":")[:2]
        expected = "string" if name == "dir" else GROUP_BY_UCI[name].datatype()
        assert datatype == expected, item
    assert "restart:list(hostname)" in listed and "enabled:bool:1" in listed


def validate_data() -> str:
    root = os.environ.get("OWSYNC_OPENWRT_ROOT", "")
    tool = Path(root) / "sbin/validate_data"
    if not root or not os.access(tool, os.X_OK):
        pytest.skip("set OWSYNC_OPENWRT_ROOT to an OpenWrt root holding sbin/validate_data")
    return str(tool)


def test_openwrts_validate_data_accepts_exactly_what_the_daemon_accepts(tmp_path):
    """Each setting's datatype, as the init script and LuCI use it, run through
    OpenWrt's real validate_data on the edges of its range: the same answer
    for numbers, flags, addresses and the key; for free text (paths, patterns,
    peers) validate_data's `string` is looser, and the daemon's own check is
    the one line that refuses the rest."""
    tool = validate_data()
    checked = 0
    for s in SETTINGS:
        datatype = s.datatype()
        if datatype.startswith("list("):
            datatype = datatype[5:-1]
        for value in probes(s, tmp_path):
            r = subprocess.run([tool, datatype, value], capture_output=True, text=True)
            agree(s, value, r.returncode == 0, (datatype, r.stderr))
            checked += 1
    assert checked > 60


def probes(s: Setting, tmp_path: Path) -> list[str]:
    """Values on the edges of what a setting accepts."""
    values = [good_value(s, tmp_path), *(b for b in bad_values(s) if b)]
    if s.kind == INT:
        values += [str(s.lo), str(s.lo - 1) if s.lo else "-1", "+1", " 1"]
    if s.kind == HOST:
        values += ["::", "0.0.0.0", "router.lan", "fe80::1%eth0", "a;b"]
    if s.kind == SERVICE:  # where validate_data and LuCI disagree, the daemon takes neither
        values += ["-x", "x-", "1.2", "a.-b", "_x", "https-dns-proxy", "a" * 253, "a" * 254]
    return values


def agree(s: Setting, value: str, theirs: bool, why) -> None:
    """Another checker's verdict on ``value`` against the daemon's: the same,
    or, for free text (paths, patterns, peers) and service names (where
    validate_data and LuCI disagree), looser: the daemon's own check is then
    the one line that refuses the rest."""
    try:
        s.parse(value)
        ours = True
    except BadValue:
        ours = False
    if s.kind in (PATH, PATTERN, PEER, SERVICE):
        assert theirs or not ours, (s.attr, value, why)
    else:
        assert theirs == ours, (s.attr, value, why)


# --- LuCI's Settings page -------------------------------------------------------------


def luci_fields(view: Path) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to run LuCI's view")
    r = subprocess.run([node, str(FIELDS_JS), str(view)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_luci_settings_fields_agree_with_the_schema():
    fields = [f for f in luci_fields(VIEWS / "settings.js") if f["section"] == "main"]
    shipped = read_uci(UCI_DEFAULT)["main"]  # as pyuci gives it, ".type" and all
    assert len(fields) >= 10
    for f in fields:
        s = OPTIONS.get(f["name"])
        assert s is not None and not s.secret, f["name"]
        where = f["name"]
        if f["widget"] == "Flag":
            assert s.kind == BOOL, where
            # unset, the box shows what the daemon does: the shipped configuration
            # without this option
            cfg = config_from_section({k: v for k, v in shipped.items() if k != s.uci}, "m")
            effective = cfg.reload_enabled if s.attr == "reload_services" else getattr(cfg, s.attr)
            assert (f["default"] or "0") == ("1" if effective else "0"), where
        elif f["widget"] == "DynamicList":
            assert s.multi, where
            if f["placeholder"] is not None:
                s.parse(f["placeholder"])  # an example the daemon accepts
        elif f["widget"] == "ListValue":
            assert s.kind == INT and s.labels, where
            assert f["options"] == [str(v) for v in s.values()], where
            assert f["default"] == s.describe_default(uci=True), where
        else:
            assert f["widget"] == "Value" and not s.multi, where
            assert f["datatype"] == s.datatype(), where
            assert f["placeholder"] == s.describe_default(uci=True), where
    # the fields LuCI shows are the settings an admin sets on the page
    assert {f["name"] for f in fields} >= {"enabled", "peer", "plain_mode", "include",
                                           "exclude", "port", "host", "poll_interval",
                                           "log_level", "min_protocol"}  # fmt: skip


def test_luci_group_fields_agree_with_the_schema():
    """The Groups table (a `config group` section each): every per-group
    option of the schema, each with its widget, default and an example the
    daemon accepts."""
    fields = [f for f in luci_fields(VIEWS / "settings.js") if f["section_type"] == "group"]
    if not fields:
        pytest.skip("LuCI's Settings page has no Groups table on this branch")
    assert [f["name"] for f in fields] == list(GROUP_BY_UCI)
    for f in fields:
        s, where = GROUP_BY_UCI[f["name"]], f["name"]
        if f["widget"] == "Flag":
            assert s.kind == BOOL and f["default"] == s.describe_default(), where
        elif f["widget"] == "DynamicList":
            assert s.multi, where
        else:
            assert f["widget"] == "Value" and not s.multi and s.attr == "sync_dir", where
            # LuCI's `directory` checks nothing in a browser: a missing dir is fine (it waits)
            assert f["datatype"] in ("directory", "string") and f["rmempty"] is False, where
        if f["placeholder"] is not None:
            s.parse(f["placeholder"])


def test_luci_accepts_exactly_what_the_daemon_accepts(tmp_path):
    """Each field's datatype through LuCI's own validation.js (from
    OWSYNC_LUCI_ROOT), on the edges of each range."""
    validation = Path(os.environ.get("OWSYNC_LUCI_ROOT", "/nonexistent")) / (
        "www/luci-static/resources/validation.js"
    )
    if not validation.is_file():
        pytest.skip("set OWSYNC_LUCI_ROOT to LuCI's runtime tree (www/luci-static/resources)")
    cases = []
    for f in luci_fields(VIEWS / "settings.js"):
        if f["datatype"]:
            cases += [(OPTIONS[f["name"]], f["datatype"], v) for v in
                      probes(OPTIONS[f["name"]], tmp_path)]  # fmt: skip
    r = subprocess.run(
        [shutil.which("node") or "node", str(ROOT / "tests/luci/validate.mjs"), str(validation)],
        input=json.dumps([(datatype, v) for _, datatype, v in cases]),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    verdicts = json.loads(r.stdout)
    assert len(verdicts) == len(cases) > 20
    for (s, datatype, value), theirs in zip(cases, verdicts, strict=True):
        agree(s, value, theirs, datatype)


# --- the command line's help ----------------------------------------------------------


def help_entries() -> dict[str, str]:
    """`owsync --help`, run: each option's flags -> its text (continuations joined)."""
    r = subprocess.run(owsync_cmd("--help"), env=base_env(None), capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0 and r.stderr == ""
    entries: dict[str, str] = {}
    last = None
    for line in r.stdout.split("Common options", 1)[1].splitlines()[1:]:
        m = re.match(r"  (-[-\w]+(?:, -[-\w]+)*)(?: ([A-Z]+))?(?:\s+(.*))?$", line)
        if m:
            last = m.group(1)
            entries[last] = m.group(3) or ""
        elif line.startswith(" " * 25) and last:
            entries[last] += " " + line.strip()
        else:
            last = None
    return entries


def test_help_names_every_option_and_tells_each_settings_true_default(tmp_path):
    entries = help_entries()
    documented = {flag for flags in entries for flag in flags.split(", ")}
    parser_flags = {name for o in cli._options() for name in o.names}
    # every option parsed is documented (--debug is 1.2.0's alias of -v; --json
    # and --wait are in the usage lines of the commands that take them)
    assert parser_flags - documented == {"--debug", "--json", "--wait"}
    assert documented <= parser_flags
    no_options = cli.build_config(cli.parse_args(["listen"]))
    for s in SETTINGS:
        if not s.flags:
            continue
        text = entries[", ".join(s.flags)]
        assert f"[{s.file_key}]" in text, text
        if s.kind == INT and not s.labels:
            assert s.expected() in text, text
        default = re.search(r"\(default: (.*)\)$", text)
        if s.kind == BOOL and s.default is False:
            assert default is None and getattr(no_options, s.attr) is False
            continue
        assert default, text
        stated = default.group(1).split("; from UCI: ")
        if s.default is None or s.multi:  # derived, or an empty list: said in words
            assert stated[0] == s.default_text
            assert getattr(no_options, s.attr) == ([] if s.multi else None)
        else:  # what the command line gives with no option at all
            assert s.parse(stated[0]) == getattr(no_options, s.attr) == s.default, s.attr
        if len(stated) == 2:
            assert s.parse(stated[1]) == getattr(config_from_section({}, "m"), s.attr)
    # the control socket's stated default, as the daemon derives it
    text = entries["--control-socket"]
    assert "/var/run/owsync/<database path, '/' as '-'>.sock" in text
    db = "/srv/a b/owsync.db"
    assert Config(database=db).control_path() == "/var/run/owsync/srv-a b-owsync.db.sock"
    assert "never forks" in entries["-f, --foreground"]
    assert "stay in the foreground" not in json.dumps(entries)


@pytest.mark.parametrize("foreground", [True, False])
def test_the_daemon_never_forks_and_f_adds_stderr(tmp_path, foreground):
    """What -f's help says: the process started is the daemon, -f or not; with
    -f its log reaches stderr too; without it, syslog alone, or stderr where
    there is no syslog (a container, this test machine perhaps)."""
    sync = tmp_path / "d"
    sync.mkdir()
    sock = tmp_path / "ctl.sock"
    port = free_port()
    args = ["daemon", "-H", "127.0.0.1", "-P", str(port), "-d", str(sync),
            "-b", str(tmp_path / "db"), "--control-socket", str(sock),
            "--auto-sync", f"127.0.0.1:{free_port()}", "-i", "*"]  # fmt: skip
    if foreground:
        args.append("-f")
    err = tmp_path / "stderr"
    with open(err, "w") as errf:
        proc = subprocess.Popen(owsync_cmd(*args), env=base_env(KEY), stdout=subprocess.DEVNULL,
                                stderr=errf)  # fmt: skip
    try:
        assert wait_for(lambda: sock.exists() or proc.poll() is not None, 30)
        assert proc.poll() is None, err.read_text()
        r = subprocess.run(
            owsync_cmd("status", "--json", "--control-socket", str(sock)),
            env=base_env(None), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["pid"] == proc.pid  # the process started is the daemon
        listening = f"listening on 127.0.0.1 port {port}"
        if foreground or not syslog_available():
            assert wait_for(lambda: listening in err.read_text(), 10)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
    if not foreground and syslog_available():
        assert err.read_text() == ""


def test_a_reload_with_a_bad_value_keeps_the_running_configuration(tmp_path):
    node = DaemonNode(tmp_path, "a").configure([f"127.0.0.1:{free_port()}"])
    try:
        node.start()
        pid = node.status()["pid"]
        node.configure([f"127.0.0.1:{free_port()}"], extra="versions_keep=1001\n")
        node.proc.send_signal(signal.SIGHUP)
        expected = (
            f"reload failed, keeping the running configuration: {node.conf}:11:"
            " bad value for versions_keep: '1001' (expected a whole number in 0..1000)"
        )
        assert wait_for(lambda: expected in node.text(), 20), node.text()
        assert node.proc.poll() is None and node.status()["pid"] == pid
        assert len(node.status()["peers"]) == 1
        node.configure([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"])
        node.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "configuration reloaded: 2 peer(s)" in node.text(), 20)
    finally:
        assert node.stop() == 0


def test_every_option_of_the_shipped_uci_file_is_a_setting_with_a_good_value():
    """Commented out or not, each option the shipped /etc/config/owsync shows
    is one the daemon knows, with a value it accepts."""
    shown = re.findall(r"^\s*#?\s*(config|option|list) (\w+) '([^']*)'", UCI_DEFAULT.read_text(),
                       re.M)  # fmt: skip
    assert len(shown) > 15
    options = OPTIONS
    for kind, name, value in shown:
        if kind == "config":  # the options that follow are this section's
            options = OPTIONS if name == "owsync" else GROUP_BY_UCI
            continue
        s = options[name]
        assert (kind == "list") == s.multi, name
        if s.secret:
            assert kind == "option" and value == "", name  # never a key in the example
            continue
        s.parse(value)


def test_the_helps_defaults_are_what_a_daemon_started_without_options_does(tmp_path):
    """No -H, -P, --min-protocol, --control-socket: the daemon listens on
    '::' port 4321, asks protocol 1 of its peers, and serves its control
    socket where --help says, found by `owsync status -b DB` alone."""
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::", 4321))
        except OSError:
            pytest.skip("port 4321, the default, is in use here")
    entries = help_entries()
    assert "(default: ::)" in entries["-H, --host"] and "(default: 4321)" in entries["-P, --port"]
    assert "(default: 1)" in entries["--min-protocol"]
    sync, db = tmp_path / "d", tmp_path / "owsync.db"
    sync.mkdir()
    sock = Path("/var/run/owsync") / (str(db).strip("/").replace("/", "-") + ".sock")
    assert "<database path, '/' as '-'>" in entries["--control-socket"]
    args = ["daemon", "-f", "-d", str(sync), "-b", str(db), "-i", "*",
            "--auto-sync", f"127.0.0.1:{free_port()}"]  # fmt: skip
    proc = subprocess.Popen(owsync_cmd(*args), env=base_env(KEY), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_for(lambda: sock.exists() or proc.poll() is not None, 30)
        assert proc.poll() is None
        r = subprocess.run(owsync_cmd("status", "--json", "-b", str(db)), env=base_env(None),
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert (st["listen"], st["min_protocol"], st["pid"]) == (":: port 4321", 1, proc.pid)
        assert accepts(4321)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def test_the_daemon_refuses_a_bad_uci_value_in_one_line(tmp_path):
    """Read by the real pyuci, as on a router: the file, the option, the range."""
    bindings = os.environ.get("OWSYNC_PYBINDINGS", "")
    if not bindings or not os.path.isdir(bindings):
        pytest.skip("set OWSYNC_PYBINDINGS to the compiled ubus and uci python modules")
    confdir = tmp_path / "config"
    confdir.mkdir()
    (confdir / "owsync").write_text(
        f"config owsync 'main'\n\toption dir '{tmp_path}'\n\toption db '{tmp_path / 'db'}'\n"
        "\toption plain_mode '1'\n\tlist peer '127.0.0.1:1'\n\tlist include '*'\n"
        "\toption versions_max_age '0'\n"
    )
    env = base_env(None)
    env["PYTHONPATH"] = bindings + os.pathsep + env["PYTHONPATH"]
    line = refused_in_one_line("daemon", "--no-syslog", "--uci-dir", str(confdir), env=env,
                               writes_none=[tmp_path / "db"])  # fmt: skip
    assert line.endswith(
        f"{confdir}/owsync: bad value for owsync.main.versions_max_age: '0'"
        " (expected a whole number in 1..36500)"
    ), line
