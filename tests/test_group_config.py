"""Sync groups as the configuration gives them: UCI's `config group` sections
(read by the real pyuci), the key=value file's group.NAME.OPTION keys, and
what is refused in one line (a bad name, a symlinked or relative dir, two
groups that would both own a path) by the real daemon, before it writes
anything.  Also the two questions the patterns answer alone: which
directories can hold a match, and whether two filters can share a path
(checked against every string of a small alphabet).
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BINDINGS, bindings_env, refused_in_one_line

from owsync.core import protocol2
from owsync.core.examples import EXAMPLES
from owsync.core.filters import Filter, common_path
from owsync.core.paths import is_hidden, path_problem
from owsync.core.protocol2 import valid_group
from owsync.core.settings import MAX_GROUP_NAME, is_group_name, is_service
from owsync.openwrt.uci_config import config_from_sections
from owsync.service.config import MAIN, ConfigError, Group, parse_text

ETC_GROUP = ["passwd", "shadow", "group", "uhttpd.crt", "uhttpd.key", "rc.local", "sysctl.conf"]


def etc_tree(tmp_path: Path) -> Path:
    """An /etc with a config directory, dropbear keys and the files of the examples."""
    etc = tmp_path / "etc"
    for d in ("config", "dropbear", "crontabs"):
        (etc / d).mkdir(parents=True)
    for name in ("dhcp", "network", "system", "firewall"):
        (etc / "config" / name).write_text(f"config {name}\n")
    for name in ETC_GROUP:
        (etc / name).write_text(name)
    (etc / "dropbear/dropbear_ed25519_host_key").write_text("k")
    (etc / "crontabs/root").write_text("* * * * * true\n")
    return etc


def conf(etc: Path, *lines: str) -> str:
    return "\n".join([f"sync_dir={etc}/config", "include=*", "exclude=network", *lines]) + "\n"


# --- the key=value file ---------------------------------------------------------------


def test_key_value_groups_in_their_order_with_their_settings(tmp_path):
    etc = etc_tree(tmp_path)
    text = conf(
        etc,
        f"group.keys.dir={etc}/dropbear",
        "group.keys.include=dropbear_*_host_key",
        "group.keys.restart=dropbear",
        f"group.etc.sync_dir={etc}",  # main's key for the dir works too
        *(f"group.etc.include={p}" for p in ETC_GROUP),
        "group.etc.reload=uhttpd",
        "group.etc.enabled=0",
        "group.keys.bogus=1",
        "poll_interval=30",
    )
    cfg = parse_text(text, "f.conf")
    # 1.2.0's keys keep their meaning: they are main's
    assert (cfg.sync_dir, cfg.include, cfg.exclude, cfg.poll_interval) == (
        f"{etc}/config", ["*"], ["network"], 30,
    )  # fmt: skip
    assert cfg.all_groups() == [
        Group(MAIN, f"{etc}/config", ("*",), ("network",)),
        Group("keys", f"{etc}/dropbear", ("dropbear_*_host_key",), (), True, (), ("dropbear",)),
        Group("etc", str(etc), tuple(ETC_GROUP), (), False, ("uhttpd",), ()),
    ]
    assert cfg.warnings == ["f.conf:17: unknown key 'group.keys.bogus' ignored"]
    assert cfg.group_database("keys").endswith("owsync.keys.db")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("group.bad-name.dir=/srv", "f.conf:4: group.bad-name.dir: bad group name 'bad-name'"),
        ("group.main.dir=/srv", "f.conf:4: group.main.dir: bad group name 'main'"),
        ("group..dir=/srv", "f.conf:4: group..dir: bad group name ''"),
        ("group.g=/srv", "f.conf:4: group.g: expected group.NAME.OPTION=VALUE"),
        ("group.g.dir=srv", "f.conf: group g: dir 'srv' is not an absolute path"),
        ("group.g.include=a", "f.conf: group.g has no dir: set the directory the group syncs"),
        ("group.g.restart=../../bin/sh", "f.conf:4: bad value for group.g.restart: "),
        ("reload=uhttpd", "f.conf:4: reload: reload belongs to a group"),
    ],
)
def test_key_value_refusals_are_one_line(tmp_path, line, message):
    etc = etc_tree(tmp_path)
    with pytest.raises(ConfigError) as err:
        parse_text(conf(etc, line), "f.conf")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_missing_dir_waits_a_symlink_or_a_file_is_refused(tmp_path):
    etc = etc_tree(tmp_path)
    cfg = parse_text(conf(etc, f"group.acme.dir={etc}/acme", "group.acme.include=*"), "f.conf")
    assert [g.name for g in cfg.groups] == ["acme"]
    assert cfg.warnings == [f"group acme: {etc}/acme does not exist; the group waits until it does"]
    (etc / "keys").symlink_to(etc / "dropbear")
    for d in (f"{etc}/keys", f"{etc}/keys/", f"{etc}/keys/."):
        with pytest.raises(ConfigError, match=r"f.conf: group k: dir .*/keys is a symlink \(to "):
            parse_text(conf(etc, f"group.k.dir={d}", "group.k.include=*"), "f.conf")
    with pytest.raises(ConfigError, match=r"f.conf: group k: dir .*/passwd is not a directory"):
        parse_text(conf(etc, f"group.k.dir={etc}/passwd", "group.k.include=*"), "f.conf")


# --- overlap ---------------------------------------------------------------------------


def groups_text(etc: Path, *groups: tuple[str, str, list[str], list[str]]) -> str:
    lines = []
    for name, d, include, exclude in groups:
        lines.append(f"group.{name}.dir={d}")
        lines += [f"group.{name}.include={p}" for p in include]
        lines += [f"group.{name}.exclude={p}" for p in exclude]
    return conf(etc, *lines)


def overlap(etc: Path, *groups) -> str | None:
    try:
        parse_text(groups_text(etc, *groups), "f.conf")
    except ConfigError as exc:
        return str(exc)
    return None


def test_groups_that_never_share_a_path_are_fine(tmp_path):
    etc = etc_tree(tmp_path)
    # the issue's own example: /etc for passwd and uhttpd.crt beside /etc/config
    assert overlap(etc, ("etc", str(etc), ETC_GROUP, [])) is None
    assert overlap(
        etc,
        ("etc", str(etc), ETC_GROUP, []),
        ("keys", f"{etc}/dropbear", ["dropbear_*_host_key"], []),
        ("cron", f"{etc}/crontabs", ["root"], []),
        ("certs", str(etc), ["*.pem"], ["config/*"]),  # main's files excluded here
        ("net", str(etc), ["config/network"], []),  # main excludes network
    ) is None  # fmt: skip
    # a disabled group owns nothing
    text = groups_text(etc, ("all", str(etc), ["*"], [])) + "group.all.enabled=0\n"
    assert parse_text(text, "f.conf").groups[0].enabled is False


def test_groups_that_would_share_a_path_are_refused_naming_both_and_the_path(tmp_path):
    etc = etc_tree(tmp_path)
    both = "f.conf: groups main and {} would both own {}: give each path one group"
    # a file there now is the example
    for include in (["*"], ["config/*"], ["config/d*"], ["c?nfig/dhcp"], ["*/dhcp"]):
        message = overlap(etc, ("g", str(etc), include, []))
        assert message and message.startswith(both.format("g", f"{etc}/config/dhcp")), message
    # none there: the patterns give one
    message = overlap(etc, ("g", str(etc), ["config/ddns"], []))
    assert message and message.startswith(both.format("g", f"{etc}/config/ddns")), message
    message = overlap(etc, ("g", str(etc), ["*.cfg"], []))
    assert message and message.startswith(both.format("g", f"{etc}/config/x.cfg")), message
    # the same dir, two groups: the common name of two wildcards
    a, b = ("a", str(etc), ["*.crt"], ["config/*"]), ("b", str(etc), ["uhttpd.*"], [])
    message = overlap(etc, a, b)
    assert message and message.startswith(
        f"f.conf: groups a and b would both own {etc}/uhttpd.crt"
    ), message
    # a group inside main's dir, the inner one named second
    message = overlap(etc, ("sub", f"{etc}/config", ["dhcp"], []))
    assert message and message.startswith(both.format("sub", f"{etc}/config/dhcp")), message
    # equal dirs through a symlinked parent are still the same dir
    (tmp_path / "alias").symlink_to(tmp_path)
    message = overlap(etc, ("g", str(tmp_path / "alias/etc"), ["config/*"], []))
    assert message and f"would both own {etc}/config/dhcp" in message, message


def test_the_daemon_refuses_overlapping_groups_in_one_line_and_writes_nothing(tmp_path):
    etc = etc_tree(tmp_path)
    db = tmp_path / "db" / "owsync.db"
    path = tmp_path / "groups.conf"
    path.write_text(
        groups_text(etc, ("keys", f"{etc}/dropbear", ["*"], []), ("g", str(etc), ["config/*"], []))
        + f"database={db}\nplain_mode=1\npeer=127.0.0.1:1\ncontrol_socket={tmp_path / 's'}\n"
    )
    line = refused_in_one_line("daemon", "-c", str(path), writes_none=[db.parent, tmp_path / "s"])
    assert line.endswith(
        f"{path}: groups main and g would both own {etc}/config/dhcp: give each path one group"
        " (change a dir, include or exclude)"
    ), line


def test_a_main_dir_given_on_the_command_line_is_checked_against_the_groups(tmp_path):
    """-d moves main's directory after the file is read: onto the group's here."""
    etc = etc_tree(tmp_path)
    db = tmp_path / "db" / "owsync.db"
    path = tmp_path / "groups.conf"
    path.write_text(
        groups_text(etc, ("accounts", str(etc), ["passwd"], []))
        + f"database={db}\nplain_mode=1\npeer=127.0.0.1:1\ncontrol_socket={tmp_path / 's'}\n"
    )
    line = refused_in_one_line("daemon", "-c", str(path), "-d", str(etc),
                               writes_none=[db.parent, tmp_path / "s"])  # fmt: skip
    assert f"command line: groups main and accounts would both own {etc}/passwd" in line, line


# --- UCI, through the real pyuci --------------------------------------------------------


def uci_file(confdir: Path, body: str, etc: Path) -> None:
    confdir.mkdir(exist_ok=True)
    (confdir / "owsync").write_text(
        f"config owsync 'main'\n\toption dir '{etc}/config'\n\tlist include '*'\n"
        f"\tlist exclude 'network'\n\n{body}"
    )


def load_with_pyuci(confdir: Path) -> subprocess.CompletedProcess:
    if not (BINDINGS and Path(BINDINGS).is_dir()):
        pytest.skip("set OWSYNC_PYBINDINGS to the compiled uci python module")
    code = (
        "import json, sys\n"
        "from owsync.openwrt.uci_config import load_uci\n"
        "from owsync.service.config import ConfigError\n"
        "try:\n"
        f"    cfg = load_uci({str(confdir)!r})\n"
        "except ConfigError as exc:\n"
        "    sys.exit(str(exc))\n"
        "print(json.dumps({'groups': [g._asdict() for g in cfg.all_groups()],"
        " 'warnings': cfg.warnings}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=bindings_env(), capture_output=True,
                          text=True, timeout=60)  # fmt: skip


def test_uci_group_sections_in_their_order(tmp_path):
    etc = etc_tree(tmp_path)
    confdir = tmp_path / "uci"
    uci_file(confdir, (
        f"config group 'keys'\n\toption dir '{etc}/dropbear'\n"
        "\tlist include 'dropbear_*_host_key'\n\tlist restart 'dropbear'\n\n"
        f"config group 'etc'\n\toption dir '{etc}'\n"
        + "".join(f"\tlist include '{p}'\n" for p in ETC_GROUP)
        + "\toption reload 'uhttpd'\n\toption enabled '0'\n\toption bogus '1'\n\n"
        "config peer 'x'\n\n"
        f"config group 'acme'\n\toption dir '{etc}/acme'\n\tlist include '*.crt'\n"
    ), etc)  # fmt: skip
    r = load_with_pyuci(confdir)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [(g["name"], g["sync_dir"], g["enabled"], g["reload"], g["restart"])
            for g in got["groups"]] == [
        ("main", f"{etc}/config", True, [], []),
        ("keys", f"{etc}/dropbear", True, [], ["dropbear"]),
        ("etc", str(etc), False, ["uhttpd"], []),
        ("acme", f"{etc}/acme", True, [], []),
    ]  # fmt: skip
    assert got["groups"][2]["include"] == ETC_GROUP
    assert got["warnings"] == [
        "owsync.x: section of type 'peer' ignored",
        "owsync.etc.bogus: unknown option ignored",
        f"group acme: {etc}/acme does not exist; the group waits until it does",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("config group\n\toption dir '{etc}/dropbear'\n",
         "{uci}/owsync: a group section has no name (its name names its database and what"
         " the peers sync it as): uci rename owsync.cfg"),
        ("config group 'g'\n\toption dir '{etc}'\n\tlist include 'config/*'\n",
         "{uci}/owsync: groups main and g would both own {etc}/config/dhcp: give each path"),
        ("config group 'g'\n\tlist dir '/a'\n\tlist dir '/b'\n",
         "{uci}/owsync: owsync.g.dir takes one value, not a list"),
        ("config group 'g'\n\toption dir 'etc'\n",
         "{uci}/owsync: group g: dir 'etc' is not an absolute path"),
        ("config group 'g'\n\toption dir '/srv'\n\tlist reload 'a b'\n",
         "{uci}/owsync: bad value for owsync.g.reload: 'a b' (expected the name of an init"),
        ("config group 'g'\n\toption dir '/srv'\n\toption enabled 'maybe'\n",
         "{uci}/owsync: bad value for owsync.g.enabled: 'maybe' (expected 1 or 0"),
    ],
)  # fmt: skip
def test_uci_refusals_are_one_line(tmp_path, body, message):
    etc = etc_tree(tmp_path)
    confdir = tmp_path / "uci"
    uci_file(confdir, body.format(etc=etc), etc)
    r = load_with_pyuci(confdir)
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith(message.format(uci=confdir, etc=etc)), line


def test_the_main_section_takes_no_service_actions(tmp_path):
    sections = [("main", "owsync", {"dir": str(tmp_path), "restart": ("dropbear",)})]
    with pytest.raises(ConfigError) as err:
        config_from_sections(sections, path="/c/owsync")
    assert str(err.value).startswith("/c/owsync: owsync.main.restart: restart belongs to a group")


def test_a_group_name_is_one_a_hello_can_carry():
    names = ["main", "a", "_", "Keys_2", "a" * 64, "a" * 65, "a-b", "a.b", "", "é", "a b"]
    for name in names:
        assert is_group_name(name) == (valid_group(name) and name != "main"), name
    assert MAX_GROUP_NAME == protocol2.MAX_GROUP_NAME


def test_a_group_named_main_or_badly_is_refused():
    for name in ("a-b", "a.b", "", "a" * 65):
        sections = [("main", "owsync", {}), (name, "group", {"dir": "/srv"})]
        with pytest.raises(ConfigError, match=f"bad group name '{name}'"):
            config_from_sections(sections, path="/c/owsync")


# --- what the patterns alone say ----------------------------------------------------------


def test_the_directories_that_can_hold_a_match():
    cases = {
        # pattern: (directories that may hold a match, directories that cannot)
        "passwd": ([""], ["config/", "dropbear/", "a/b/"]),
        "dropbear/*": (["", "dropbear/", "dropbear/x/y/"], ["config/", "drop/", "dropbearx/"]),
        "*.crt": (["", "config/", "a/b/c/"], []),
        "*": (["", "x/"], []),
        "dropbear_*_host_key": (["", "dropbear_a/", "dropbear_a/b/"], ["dropbear/", "config/"]),
        "a/b/c": (["", "a/", "a/b/"], ["a/b/c/", "b/", "a/c/"]),
        "?x": (["", "a/", "config/"], []),  # a leading wildcard: anywhere
    }
    for pattern, (may, may_not) in cases.items():
        f = Filter([pattern])
        assert [d for d in may if not f.may_hold(d)] == [], pattern
        assert [d for d in may_not if f.may_hold(d)] == [], pattern
    assert Filter(["*"]).whole_tree and not Filter(["passwd", "dropbear/*"]).whole_tree
    assert not Filter([]).may_hold("x/")


ALPHABET = "ab/"
PIECES = ["a", "b", "/", "*", "?", "[ab]", "[!a]"]


def all_paths(n: int) -> list[str]:
    out = []
    for k in range(1, n + 1):
        out += ["".join(t) for t in itertools.product(ALPHABET, repeat=k)]
    return [p for p in out if path_problem(p) is None and not is_hidden(p)]


def test_common_path_and_may_hold_against_every_short_path():
    """Every pattern of up to three pieces over a/b/'/': a path both accept
    exists among all paths of up to six characters exactly when common_path
    finds one (and what it finds, both accept); every directory on the way to
    a match is one that may_hold says can hold it."""
    patterns = ["".join(t) for k in (1, 2, 3) for t in itertools.product(PIECES, repeat=k)]
    patterns = sorted(set(patterns))[::7]  # a spread of some 50 patterns, each pair tried
    paths = all_paths(6)
    matches = {p: [x for x in paths if Filter([p])(x)] for p in patterns}
    for p, found in matches.items():
        f = Filter([p])
        for x in found:
            parts = x.split("/")
            for i in range(1, len(parts)):
                assert f.may_hold("/".join(parts[:i]) + "/"), (p, x)
    pairs = 0
    for pa, pb in itertools.product(patterns, repeat=2):
        fa, fb = Filter([pa]), Filter([pb])
        brute = any(fb(x) for x in matches[pa])
        got = common_path(fa, fb)
        if got is not None:
            assert fa(got) and fb(got), (pa, pb, got)
        if brute:
            assert got is not None, (pa, pb)
        pairs += 1
    assert pairs > 2000
    # and nested: b's dir is 'a/' in a's
    assert common_path(Filter(["a/*"]), Filter(["b"]), "a/") == "a/b"
    assert common_path(Filter(["b/*"]), Filter(["*"]), "a/") is None


def test_an_exclude_removes_a_shared_path_but_not_an_endless_share():
    main = Filter(["*"], ["network"])  # /etc/config, inside /etc: 'config/' there
    assert common_path(Filter(["config/network"]), main, "config/") is None
    assert common_path(Filter(["config/network"]), Filter(["*"]), "config/") == "config/network"
    assert common_path(Filter(["config/*"]), main, "config/") == "config/x"
    assert common_path(Filter(["*.cfg"]), main, "config/") == "config/x.cfg"


# --- the shipped examples ---------------------------------------------------------------

SHIPPED = Path(__file__).resolve().parents[1] / "openwrt/owsync/files/etc/config/owsync"


def shipped_examples() -> list[dict]:
    """The commented-out group sections of the shipped /etc/config/owsync,
    each with the comment line just above it."""
    out: list[dict] = []
    previous = ""
    for line in SHIPPED.read_text().splitlines():
        m = re.fullmatch(r"#config group '(\w+)'", line)
        if m:
            out.append({"name": m.group(1), "why": previous.removeprefix("# "), "dir": None,
                        "include": (), "exclude": (), "reload": (), "restart": ()})  # fmt: skip
        elif out and (m := re.fullmatch(r"#\t(option|list) (\w+) '([^']*)'", line)):
            kind, name, value = m.groups()
            if kind == "option":
                out[-1][name] = value
            else:
                out[-1][name] += (value,)
        previous = line
    return out


def test_the_shipped_examples_are_the_table():
    assert shipped_examples() == list(EXAMPLES)
    assert [e["name"] for e in EXAMPLES] == ["dropbear", "uhttpd", "accounts", "crontabs",
                                             "boot", "acme"]  # fmt: skip
    for e in EXAMPLES:
        assert is_group_name(e["name"]) and 20 < len(e["why"]) <= 76, e
        assert all(is_service(s) for s in e["reload"] + e["restart"]), e


def test_the_shipped_examples_uncommented_load_together_beside_main(tmp_path):
    """Every example at once, in a tree where each of their files exists:
    they own what they name, and no two own one path."""
    etc = etc_tree(tmp_path)
    (etc / "acme/example.org_ecc").mkdir(parents=True)
    for name in ("example.org.cer", "example.org.key", "fullchain.cer"):
        (etc / "acme/example.org_ecc" / name).write_text(name)
    text = SHIPPED.read_text().replace("'/etc", f"'{etc}")
    text = re.sub(r"^#(config group|\t)", r"\1", text, flags=re.M)
    confdir = tmp_path / "uci"
    confdir.mkdir()
    (confdir / "owsync").write_text(text)
    r = load_with_pyuci(confdir)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [g["name"] for g in got["groups"]] == ["main"] + [e["name"] for e in EXAMPLES]
    assert got["warnings"] == []
    owned: dict[str, str] = {}
    for g in got["groups"]:
        f = Filter(g["include"], g["exclude"])
        root = Path(g["sync_dir"])
        for p in root.rglob("*"):
            rel = str(p.relative_to(root))
            if p.is_file() and f(rel):
                assert str(p) not in owned, (str(p), owned.get(str(p)), g["name"])
                owned[str(p)] = g["name"]
    expected = {"dropbear/dropbear_ed25519_host_key": "dropbear", "uhttpd.crt": "uhttpd",
                "shadow": "accounts", "crontabs/root": "crontabs", "sysctl.conf": "boot",
                "acme/example.org_ecc/fullchain.cer": "acme", "config/dhcp": "main"}  # fmt: skip
    for path, name in expected.items():
        assert owned[f"{etc}/{path}"] == name, path
