"""Every setting of owsync, declared once.

Each :class:`Setting` names itself in every place a setting appears: the
attribute of ``Config``, the key of the key=value file (owsync 1.2.0's keys
keep their names and meaning), the option of UCI's section, the command
line's flags.  It carries its type, range, default, help text, whether it is
per sync group, whether it is a list, whether it is a secret.  From this
table come Config's defaults and parsing, the key=value table, UCI's options
and the command line's options and help; the init script's validation list
and LuCI's fields are checked against it by the tests (``datatype`` gives
the expression that both OpenWrt's ``validate_data`` and LuCI understand).

Pure data and pure functions: nothing here reads a file or the environment.
"""

from __future__ import annotations

import re
import socket
from typing import Any, NamedTuple

from .peer import parse_peer

INT_MAX = 2**31 - 1  # the largest number OpenWrt's validate_data can check (a C long on 32 bits)

# kinds of value
BOOL = "bool"
INT = "int"
HOST = "host"  # an address to bind: an IP address or a host name
DIR = "dir"  # a directory that must exist when the daemon starts
PATH = "path"  # a file or socket path
KEY = "key"  # 64 hexadecimal characters
PEER = "peer"  # host, host:port or [v6]:port, optionally ",source"
PATTERN = "pattern"  # a glob
SERVICE = "service"  # an init script's name: /etc/init.d/NAME

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_DIGITS = re.compile(r"[0-9]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")  # what validate_data's `host` accepts besides addresses
_SERVICE_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_UCI_NAME = re.compile(r"[A-Za-z0-9_]+")

# How a key=value file of owsync 1.2.0 treats a bad value of one of its own
# keys (its parser, config.c): the file still loads.
COMPAT_DEFAULT = "default"  # any bad value: the default
COMPAT_CLAMP = "clamp"  # above the range: its top; anything else bad: the default


class BadValue(ValueError):
    """A value outside what its setting accepts; the message says what it accepts."""


class Setting(NamedTuple):
    """One setting (a NamedTuple: a dataclass's generated code costs the daemon RSS)."""

    attr: str  # Config's attribute
    kind: str
    default: Any
    help: str
    key: str | None = None  # key=value file; None: the attribute's name
    uci: str | None = None  # UCI option; None: not in UCI
    flags: tuple[str, ...] = ()  # command line; () none
    metavar: str = ""
    lo: int | None = None
    hi: int | None = None
    labels: tuple[str, ...] = ()  # the meaning of each value lo..hi, where they are few
    uci_default: Any = None  # on OpenWrt, where it differs (see uci_default_value)
    default_text: str | None = None  # for a default that is derived (None)
    multi: bool = False  # a list: repeatable key, UCI `list`, repeatable flag
    per_group: bool = False  # each sync group has its own (UCI `config group` sections)
    group_only: bool = False  # only in a group (not main's section, no Config attribute)
    # never on a command line, never shown, in no LuCI field; UCI takes it only on its
    # way to the root-only key file (uci set owsync.main.key=..., then moved there)
    secret: bool = False
    compat: str | None = None  # 1.2.0's leniency in key=value files (COMPAT_*)
    daemon_only: bool = False  # only the daemon reads it (the help says so)

    @property
    def file_key(self) -> str:
        return self.key or self.attr

    def expected(self) -> str:
        """What the setting accepts, in words: the end of every bad-value message."""
        if self.kind == INT:
            if self.labels:
                return "one of " + ", ".join(
                    f"{v} ({label})" for v, label in zip(self.values(), self.labels, strict=True)
                )
            if self.hi == INT_MAX:
                return f"a whole number, {self.lo} or more"
            return f"a whole number in {self.lo}..{self.hi}"
        return {
            BOOL: "1 or 0 (also true/false, yes/no, on/off)",
            HOST: "an IP address or a host name",
            DIR: "a directory",
            PATH: "a path",
            KEY: "64 hexadecimal characters",
            PEER: "an address, host:port or [IPv6]:port, optionally followed by ',source address'",
            PATTERN: "a glob pattern",
            SERVICE: "the name of an init script (letters, digits, '_', '-', '.')",
        }[self.kind]

    def values(self) -> range:
        assert self.lo is not None and self.hi is not None
        return range(self.lo, self.hi + 1)

    def datatype(self) -> str:
        """The type expression of OpenWrt's validate_data and of LuCI's forms."""
        if self.kind == INT:
            return f"and(uinteger,range({self.lo},{self.hi}))"
        base = {
            BOOL: "bool",
            HOST: "host",
            DIR: "directory",
            PATH: "string",
            KEY: "and(hexstring,rangelength(64,64))",
            PEER: "string",
            PATTERN: "string",
            SERVICE: "hostname",  # the one both validate_data and LuCI check as is_service does
        }[self.kind]
        return f"list({base})" if self.multi else base

    def parse(self, text: str) -> Any:
        """The value of ``text`` (already stripped); BadValue when it is not one."""
        kind = self.kind
        if kind == BOOL:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        elif kind == INT:
            assert self.lo is not None and self.hi is not None
            if _DIGITS.fullmatch(text) and self.lo <= int(text) <= self.hi:
                return int(text)
        elif kind == HOST:
            if _is_ip(text) or _HOSTNAME.fullmatch(text):
                return text
        elif kind == KEY:
            if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
                return text
        elif kind == PEER:
            try:
                return parse_peer(text)
            except ValueError as exc:
                raise BadValue(f"{exc} (expected {self.expected()})") from None
        elif kind == SERVICE:
            if is_service(text):
                return text
        elif text:  # DIR, PATH, PATTERN
            return text
        raise BadValue(f"expected {self.expected()}")

    def lenient(self, text: str) -> Any:
        """1.2.0's value for a bad ``text`` of its own keys (``compat``)."""
        hi = self.hi
        if self.compat == COMPAT_CLAMP and hi is not None and _DIGITS.fullmatch(text):
            return hi if int(text) > hi else self.default
        return self.default

    def uci_default_value(self) -> Any:
        return self.default if self.uci_default is None else self.uci_default

    def describe_default(self, uci: bool = False) -> str:
        """The default as the help, the init script and LuCI show it."""
        value = self.uci_default_value() if uci else self.default
        if value is None or self.multi:
            return self.default_text or ""
        if self.kind == BOOL:
            return "1" if value else "0"
        return str(value)


def is_service(text: str) -> bool:
    """An init script's name that OpenWrt's validate_data (``hostname``) and
    LuCI's validation.js (``hostname``) both accept: letters, digits, '_',
    '-' and '.', no empty part between dots (never '.' or '..': the name
    becomes /etc/init.d/NAME), at most 253 characters, not starting with '-',
    ending with a letter or digit unless it is all letters, digits and '_',
    and not only digits and dots."""
    if not text or len(text) > 253 or not _SERVICE_CHARS.fullmatch(text):
        return False
    if ".." in text or text[0] == "." or text[-1] == ".":
        return False
    if _UCI_NAME.fullmatch(text):
        return True
    return text[0] != "-" and text[-1].isalnum() and text.strip("0123456789.") != ""


def _is_ip(text: str) -> bool:
    """An IPv4 or IPv6 address (no zone: not an address to bind).  inet_pton,
    not ipaddress: that module is some 1 MiB that a daemon needs nowhere else."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return True
    return False


# The order is the help's and the init script's.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "enabled", BOOL, True, "run owsync (in a group: sync that group)",
        uci="enabled", per_group=True,
    ),
    Setting(
        "bind_host", HOST, "::", "address to listen on: '::' IPv4 and IPv6, '0.0.0.0' IPv4 only",
        uci="host", flags=("-H", "--host"), metavar="HOST",
    ),
    Setting(
        "port", INT, 4321, "port to listen on and to reach the peers",
        uci="port", flags=("-P", "--port"), metavar="PORT", lo=1, hi=65535,
    ),
    Setting(
        "sync_dir", DIR, ".", "directory to sync",
        uci="dir", flags=("-d", "--dir"), metavar="DIR", uci_default="/etc/config",
        per_group=True,
    ),
    Setting(
        "database", PATH, "/var/lib/owsync/owsync.db", "database (keep it on flash: tombstones)",
        uci="db", flags=("-b", "--db"), metavar="PATH", uci_default="/etc/owsync/owsync.db",
    ),
    Setting(
        "encryption_key", KEY, None, "pre-shared key, 64 hex characters (owsync genkey)",
        uci="key", secret=True,
        default_text="none: OWSYNC_KEY, or on OpenWrt the root-only file /etc/owsync/key",
    ),
    Setting(
        "plain_mode", BOOL, False, "no encryption (only inside a VPN)",
        uci="plain_mode", flags=("-p", "--plain"),
    ),
    Setting(
        "poll_interval", INT, 60, "full sync with every peer every S seconds",
        uci="poll_interval", flags=("--poll-interval",), metavar="S", lo=1, hi=INT_MAX,
        compat=COMPAT_DEFAULT, daemon_only=True,
    ),
    Setting(
        "log_level", INT, 2, "log level",
        uci="log_level", flags=("--log-level",), metavar="N", lo=0, hi=3,
        labels=("error", "warning", "info", "debug"), compat=COMPAT_CLAMP,
    ),
    Setting(
        "max_file_size", INT, 16 * 1024 * 1024, "larger files are not synced (bytes)",
        uci="max_file_size", lo=1, hi=INT_MAX,
    ),
    Setting(
        "control_socket", PATH, None, "the daemon's control socket",
        uci="control_socket", flags=("--control-socket",), metavar="PATH",
        default_text="one per database: /var/run/owsync/<database path, '/' as '-'>.sock",
    ),
    Setting(
        "reload_services", BOOL, None, "reload the services whose UCI configuration arrived",
        uci="reload_services", default_text="1 when the synced directory is /etc/config, else 0",
        daemon_only=True,
    ),
    Setting(
        "ubus_socket", PATH, None, "ubus socket", uci="ubus_socket",
        default_text="libubus's own", daemon_only=True,
    ),
    Setting(
        "versions_dir", PATH, None, "version store: what a peer or an edit replaced",
        uci="versions_dir", default_text="beside the database: <database without .db>.versions",
    ),
    Setting(
        "versions_keep", INT, 10, "versions kept per file (0: none)",
        uci="versions_keep", lo=0, hi=1000,
    ),
    Setting(
        "versions_max_size", INT, 1024 * 1024, "bytes of contents in the version store",
        uci="versions_max_size", lo=0, hi=INT_MAX,
    ),
    Setting(
        "versions_max_age", INT, 30, "days a version is kept",
        uci="versions_max_age", lo=1, hi=36500,
    ),
    Setting(
        "min_protocol", INT, 1, "the oldest protocol a peer may speak",
        uci="min_protocol", flags=("--min-protocol",), metavar="N", lo=1, hi=2,
        labels=("also sync with owsync 1.2.0", "refuse owsync 1.2.0"),
    ),
    Setting(
        "peers", PEER, (), "a peer (repeatable)", key="peer", uci="peer",
        flags=("--auto-sync",), metavar="HOST", multi=True, daemon_only=True,
        default_text="none",
    ),
    Setting(
        "include", PATTERN, (), "include glob (repeatable; none means nothing syncs)",
        uci="include", flags=("-i", "--include"), metavar="PATTERN", multi=True,
        per_group=True, default_text="none",
    ),
    Setting(
        "exclude", PATTERN, (), "exclude glob (repeatable; excludes win)",
        uci="exclude", flags=("-e", "--exclude"), metavar="PATTERN", multi=True,
        per_group=True, default_text="none",
    ),
    Setting(
        "reload", SERVICE, (), "init scripts to reload once after files of the group arrive",
        uci="reload", multi=True, per_group=True, group_only=True, default_text="none",
    ),
    Setting(
        "restart", SERVICE, (), "init scripts to restart once after files of the group arrive",
        uci="restart", multi=True, per_group=True, group_only=True, default_text="none",
    ),
)  # fmt: skip

BY_ATTR = {s.attr: s for s in SETTINGS}
# main's section and the key=value file's own keys (a group-only setting is neither)
BY_KEY = {s.file_key: s for s in SETTINGS if not s.group_only}
BY_UCI = {s.uci: s for s in SETTINGS if s.uci and not s.group_only}
GROUP_SETTINGS = tuple(s for s in SETTINGS if s.per_group)
# a group's options, by their UCI name (also its key=value key: group.NAME.OPTION)
GROUP_BY_UCI = {s.uci: s for s in GROUP_SETTINGS if s.uci}
GROUP_ONLY = {s.uci: s for s in GROUP_SETTINGS if s.group_only and s.uci}


MAX_GROUP_NAME = 64  # what a v2 Hello carries (protocol2.MAX_GROUP_NAME; a test holds them)


def is_group_name(name: str) -> bool:
    """A group's name: a UCI identifier of at most 64 characters (a Hello
    carries it), and not main's (the main section's group)."""
    return len(name) <= MAX_GROUP_NAME and bool(_UCI_NAME.fullmatch(name)) and name != "main"
