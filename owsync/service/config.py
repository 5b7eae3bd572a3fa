"""Configuration: one Config object, whatever the source.

The settings, their names, types, ranges and defaults are declared once, in
:mod:`owsync.core.settings`.  The key=value file of owsync 1.2.0 is read
here; the UCI source and the command line produce the same object through
the same validator (:func:`apply_setting`).  A bad value is a ConfigError:
one line naming the file, the setting and what it accepts.  Only what owsync
1.2.0 tolerates in its own files stays a warning: an unknown key, a line
without '=', a bad poll_interval or log_level (1.2.0's values are taken).

Sync groups besides main: in the key=value file, ``group.NAME.OPTION=VALUE``
with UCI's option names (dir, or sync_dir as main's key says it; include,
exclude, reload and restart repeatable; enabled), the groups in the order
their names first appear; 1.2.0's keys stay main's.  :func:`check_groups`
refuses, whatever the source, what no group can run with.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import NamedTuple

from ..core.crypto import parse_key
from ..core.filters import Filter, common_path
from ..core.paths import is_hidden, path_problem
from ..core.peer import Peer
from ..core.settings import (
    BY_KEY,
    GROUP_BY_UCI,
    GROUP_ONLY,
    SETTINGS,
    BadValue,
    Setting,
    is_group_name,
)
from ..io.database import own_files

MAX_PEERS = 16
CONTROL_DIR = "/var/run/owsync"  # control sockets, one per database (so per daemon)
SUN_PATH_MAX = 107  # bytes in a Unix socket path, less the NUL


MAIN = "main"  # the group of the main section: /etc/config on OpenWrt


class Group(NamedTuple):
    """One sync group: a directory, its filters, and the services its files belong to.

    ``main`` is built from the main section's own settings (its directory and
    filters); every other group comes from a ``config group 'NAME'`` section
    of UCI (or the key=value file's ``group.NAME.*`` keys).  The node's peers,
    key and port are shared by every group.
    """

    name: str
    sync_dir: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    enabled: bool = True
    reload: tuple[str, ...] = ()  # init scripts to `reload` once per batch of arrivals
    restart: tuple[str, ...] = ()  # init scripts to `restart` once per batch of arrivals

    @property
    def is_main(self) -> bool:
        return self.name == MAIN


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


def read_key_text(path: str) -> str | None:
    """The text of a key file (None when there is none); ConfigError when unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read(200).strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc}") from None


class Config:
    """Every setting, whatever its source (key=value file, UCI, options).

    The settings and their defaults are those of :mod:`owsync.core.settings`;
    the annotations below only tell the type checker their types (a test
    holds them to the schema).
    """

    enabled: bool
    bind_host: str
    port: int
    sync_dir: str
    database: str
    encryption_key: str | None
    plain_mode: bool
    poll_interval: int
    log_level: int
    max_file_size: int
    control_socket: str | None  # None: derived from the database
    reload_services: bool | None  # None: on when sync_dir is /etc/config
    ubus_socket: str | None  # None: libubus's default
    versions_dir: str | None  # None: beside the database
    versions_keep: int
    versions_max_size: int
    versions_max_age: int
    min_protocol: int
    peers: list[Peer]
    include: list[str]
    exclude: list[str]

    def __init__(self, **settings) -> None:
        for s in SETTINGS:
            if s.group_only:
                continue
            setattr(self, s.attr, list(s.default) if s.multi else s.default)
        self.key_file: str | None = None  # UCI: the root-only file holding the key
        self.groups: list[Group] = []  # the groups besides main, in their order
        self.warnings: list[str] = []
        for name, value in settings.items():
            if not hasattr(self, name):
                raise TypeError(f"no setting {name!r}")
            setattr(self, name, value)

    def key_bytes(self, environ=os.environ) -> bytes | None:
        """The AES key, or None in plain mode; ConfigError when it is missing or bad."""
        if self.plain_mode:
            return None
        text = self.encryption_key or environ.get("OWSYNC_KEY") or self._read_key_file()
        if not text:
            where = (
                f"write it to {self.key_file} (mode 0600) or uci set owsync.main.key"
                if self.key_file
                else "set encryption_key in the config file or OWSYNC_KEY"
            )
            raise ConfigError(
                f"no encryption key: {where} (generate one with 'owsync genkey'),"
                " or use plain mode inside a VPN"
            )
        try:
            return parse_key(text)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def _read_key_file(self) -> str | None:
        return read_key_text(self.key_file) if self.key_file else None

    def main_group(self) -> Group:
        return Group(MAIN, self.sync_dir, tuple(self.include), tuple(self.exclude), True)

    def all_groups(self) -> list[Group]:
        """main first, then the other groups (enabled or not), in their order."""
        return [self.main_group(), *self.groups]

    def _beside_database(self, suffix: str) -> str:
        base = self.database[:-3] if self.database.endswith(".db") else self.database
        return base + suffix

    def group_database(self, name: str) -> str:
        """Each group's own database: main's as configured, another's beside it
        (/etc/owsync/owsync.db -> /etc/owsync/owsync.dropbear.db)."""
        return self.database if name == MAIN else self._beside_database(f".{name}.db")

    def group_versions_path(self, name: str) -> str:
        """Each group's own version store: main's as configured, another's beside
        it (/etc/owsync/owsync.versions -> /etc/owsync/owsync.dropbear.versions)."""
        if name == MAIN:
            return self.versions_path()
        if self.versions_dir:
            return f"{self.versions_dir.rstrip('/')}.{name}"
        return self._beside_database(f".{name}.versions")

    def control_path(self) -> str:
        """The daemon's control socket: as configured, or one per database.

        Deriving it from the database lets several daemons run side by side on
        one host, and lets ``owsync status`` find the daemon that the same
        options (-c, --db, UCI) start.
        """
        if self.control_socket:
            return self.control_socket
        db = os.path.realpath(self.database)
        path = f"{CONTROL_DIR}/{db.strip('/').replace('/', '-')}.sock"
        if len(path.encode()) > SUN_PATH_MAX:
            import hashlib  # lazy: it loads OpenSSL (some 3 MiB), rarely needed here

            path = f"{CONTROL_DIR}/{hashlib.sha256(db.encode()).hexdigest()[:24]}.sock"
        return path

    def versions_path(self) -> str:
        """The version store: as configured, or beside the database
        (/etc/owsync/owsync.db -> /etc/owsync/owsync.versions)."""
        if self.versions_dir:
            return self.versions_dir
        return self._beside_database(".versions")

    def versions_limits(self):
        # lazy: the CLI imports this module for every command, most without the store
        from ..io.versions import Limits

        return Limits(self.versions_keep, self.versions_max_size, self.versions_max_age)

    @property
    def reload_enabled(self) -> bool:
        if self.reload_services is not None:
            return self.reload_services
        return os.path.normpath(self.sync_dir) == "/etc/config"


def apply_setting(
    cfg: Config | GroupValues,
    setting: Setting,
    value: str,
    where: str,
    name: str,
    compat: bool = False,
) -> None:
    """Validate and set one value of a setting, named ``name`` at ``where``.

    A bad value is a ConfigError naming the place, the setting and what it
    accepts, except, with ``compat`` (a key=value file), for the keys whose
    bad values owsync 1.2.0 tolerates: those warn and take 1.2.0's value.
    """
    try:
        parsed = setting.parse(value)
    except BadValue as exc:
        shown = "(not shown)" if setting.secret else repr(value)
        if compat and setting.compat:
            parsed = setting.lenient(value)
            cfg.warnings.append(
                f"{where}: bad value for {name}: {shown} ({exc}); using {parsed},"
                " as owsync 1.2.0 does"
            )
        else:
            raise ConfigError(f"{where}: bad value for {name}: {shown} ({exc})") from None
    if setting.attr == "peers":
        assert isinstance(cfg, Config)
        if len(cfg.peers) >= MAX_PEERS:
            raise ConfigError(f"{where}: too many peers: at most {MAX_PEERS} are allowed")
        cfg.peers.append(parsed)
    elif setting.multi:
        getattr(cfg, setting.attr).append(parsed)
    else:
        setattr(cfg, setting.attr, parsed)


GROUP_KEY = "group."  # the key=value file's group keys: group.NAME.OPTION=VALUE


class GroupValues:
    """A group's settings as its source gives them, option by option (then a Group)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.warnings: list[str] = []
        self.sync_dir: str | None = None
        self.enabled = True
        self.include: list[str] = []
        self.exclude: list[str] = []
        self.reload: list[str] = []
        self.restart: list[str] = []

    def set(self, option: str, value: str, path: str, where: str) -> bool:
        """One option (UCI's name) of the group, validated as the schema says;
        False when the group has no such option."""
        setting = GROUP_BY_UCI.get(option)
        if setting is None:
            return False
        apply_setting(self, setting, value, path, where)
        return True

    def group(self, path: str, where: str) -> Group:
        if not self.sync_dir:
            raise ConfigError(f"{path}: {where} has no dir: set the directory the group syncs")
        if not self.include:
            self.warnings.append(f"{where} has no include pattern: nothing in it syncs")
        return Group(self.name, self.sync_dir, tuple(self.include), tuple(self.exclude),
                     self.enabled, tuple(self.reload), tuple(self.restart))  # fmt: skip


def check_group_name(name: str, path: str, where: str) -> None:
    if not is_group_name(name):
        raise ConfigError(
            f"{path}: {where}: bad group name {name!r} (expected up to 64 letters, digits"
            " and '_', not 'main')"
        )


def not_in_main(option: str, path: str, where: str) -> ConfigError:
    """A group's own setting (reload, restart) given in main's place."""
    return ConfigError(
        f"{path}: {where}: {option} belongs to a group (main's services reload through"
        f" procd's config.change); in a config group section, or group.NAME.{option}="
    )


def parse_text(text: str, name: str = "config") -> Config:
    cfg = Config()
    groups: dict[str, GroupValues] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{lineno}"
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            cfg.warnings.append(f"{where}: malformed line ignored (expected key=value)")
            continue
        if key.startswith(GROUP_KEY):
            gname, _, option = key[len(GROUP_KEY) :].partition(".")
            check_group_name(gname, where, key)
            if not option:
                raise ConfigError(f"{where}: {key}: expected group.NAME.OPTION=VALUE")
            values = groups.setdefault(gname, GroupValues(gname))
            # main's key for its directory, sync_dir, is the group's dir too
            if not values.set("dir" if option == "sync_dir" else option, value.strip(), where, key):
                cfg.warnings.append(f"{where}: unknown key {key!r} ignored")
            continue
        setting = BY_KEY.get(key)
        if setting is None:
            if key in GROUP_ONLY:
                raise not_in_main(key, where, key)
            cfg.warnings.append(f"{where}: unknown key {key!r} ignored")
            continue
        apply_setting(cfg, setting, value.strip(), where, key, compat=True)
    for gname, values in groups.items():
        cfg.groups.append(values.group(name, f"group.{gname}"))
        cfg.warnings += values.warnings
    check_groups(cfg, name)
    return cfg


def check_groups(cfg: Config, path: str) -> None:
    """Refuse what no group can run with (ConfigError, one line): a group dir
    that is relative, a symlink or not a directory, two groups of one name,
    two enabled groups that would both own a path.  A group whose dir is
    missing is fine: it waits for it (a warning says so)."""
    seen = set()
    for g in cfg.groups:
        where = f"{path}: group {g.name}"
        if g.name in seen:
            raise ConfigError(f"{where} is defined twice")
        seen.add(g.name)
        check_group_name(g.name, path, f"group {g.name}")
        if not os.path.isabs(g.sync_dir):
            raise ConfigError(f"{where}: dir {g.sync_dir!r} is not an absolute path")
        d = os.path.normpath(g.sync_dir)  # '/etc/keys/' is the link itself, not its target
        if os.path.islink(d):
            raise ConfigError(
                f"{where}: dir {d} is a symlink (to {os.readlink(d)}): name the directory itself"
            )
        if os.path.lexists(d) and not os.path.isdir(d):
            raise ConfigError(f"{where}: dir {d} is not a directory")
        if not os.path.lexists(d):
            cfg.warnings.append(
                f"group {g.name}: {d} does not exist; the group waits until it does"
            )
    check_overlap(cfg, path)


def check_overlap(cfg: Config, path: str) -> None:
    """Refuse two enabled groups that would both own a path (main's directory
    and filters included: the command line may change them after the file)."""
    enabled = [g for g in cfg.all_groups() if g.enabled]
    for i, a in enumerate(enabled):
        for b in enabled[i + 1 :]:
            example = shared_path(a, b)
            if example is not None:
                raise ConfigError(
                    f"{path}: groups {a.name} and {b.name} would both own {example}:"
                    " give each path one group (change a dir, include or exclude)"
                )


def shared_path(a: Group, b: Group) -> str | None:
    """A path both groups would sync (absolute), or None.

    Only groups whose directories are the same or nested can share one;
    the files there now are tried, then their patterns decide
    (:func:`owsync.core.filters.common_path`)."""
    da, db = os.path.realpath(a.sync_dir), os.path.realpath(b.sync_dir)
    if da != db and not db.startswith(da.rstrip("/") + "/"):
        if not da.startswith(db.rstrip("/") + "/"):
            return None
        a, b, da, db = b, a, db, da
    prefix = "" if da == db else os.path.relpath(db, da) + "/"
    outer, inner = Filter(a.include, a.exclude), Filter(b.include, b.exclude)
    # a file there now makes the clearest example; the patterns decide the rest
    found = _common_file(outer, inner, db, prefix) or common_path(outer, inner, prefix)
    return None if found is None else os.path.join(da, found)


OVERLAP_WALK = 20000


def _common_file(outer: Filter, inner: Filter, top: str, prefix: str) -> str | None:
    """A file under ``top`` (the inner group's dir, ``prefix`` in the outer's)
    that both filters accept, walking only where both can match (at most
    OVERLAP_WALK entries: the patterns are the rule, the files an example)."""
    stack = [""]
    budget = OVERLAP_WALK
    while stack and budget > 0:
        rel_dir = stack.pop(0)
        try:
            with os.scandir(os.path.join(top, rel_dir)) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        budget -= len(entries)
        for e in entries:
            rel = rel_dir + e.name
            try:
                is_dir = e.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                sub = rel + "/"
                if inner.may_hold(sub) and outer.may_hold(prefix + sub):
                    stack.append(sub)
            elif _syncable(rel) and inner(rel) and outer(prefix + rel):
                return prefix + rel
    return None


def _syncable(rel: str) -> bool:
    return path_problem(rel) is None and not is_hidden(rel)


def groups_from(
    sections: Iterable[tuple[str, Iterable[tuple[str, str]]]], path: str, where: str
) -> tuple[list[Group], list[str]]:
    """Groups from (name, (option, value)...) in order; their warnings."""
    out, warnings = [], []
    for gname, options in sections:
        label = f"{where}.{gname}"
        check_group_name(gname, path, label)
        values = GroupValues(gname)
        for option, value in options:
            if not values.set(option, value, path, f"{label}.{option}"):
                warnings.append(f"{label}.{option}: unknown option ignored")
        out.append(values.group(path, label))
        warnings += values.warnings
    return out, warnings


def load_file(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
            mode = os.fstat(f.fileno()).st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    cfg = parse_text(text, path)
    if cfg.encryption_key and mode & 0o077:
        cfg.warnings.append(
            f"{path} holds the encryption key and others can read it: chmod 600 {path}"
        )
    return cfg


def _inside(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` (both resolved), when strictly inside it."""
    rel = os.path.relpath(os.path.realpath(path), root)
    if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
        return None
    return rel.replace(os.sep, "/")


def _literal(path: str) -> str:
    """A glob pattern that matches ``path`` alone (fnmatch: a wildcard in brackets)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def state_paths(cfg: Config, group: Group) -> tuple[frozenset[str], tuple[str, ...]]:
    """Every group's owsync state under ``group``'s directory, relative to it:
    the files beside each database (the database, its journal, lock, temp
    and set-aside copies) and each version store ('dir/')."""
    root = os.path.realpath(group.sync_dir)
    files: set[str] = set()
    dirs: list[str] = []
    for g in cfg.all_groups():
        for f in own_files(cfg.group_database(g.name)):
            if (rel := _inside(root, f)) is not None:
                files.add(rel)
        if (rel := _inside(root, cfg.group_versions_path(g.name))) is not None:
            dirs.append(rel + "/")
    return frozenset(files), tuple(dirs)


def group_filter(cfg: Config, group: Group) -> Filter:
    """The group's filter, refusing every group's owsync state inside its
    directory too (another group's database or version store there is never
    synced, as its own never was)."""
    files, dirs = state_paths(cfg, group)
    exclude = [*group.exclude, *(_literal(f) for f in sorted(files)),
               *(_literal(d) + "*" for d in dirs)]  # fmt: skip
    return Filter(list(group.include), exclude)
