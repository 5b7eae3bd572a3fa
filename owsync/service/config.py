"""Configuration: one Config object, whatever the source.

The key=value file of owsync 1.2.0 is read here; the UCI source produces the
same object through the same validators (:func:`apply_setting`).  Problems in
a file are warnings (the value falls back to its default) except the few that
make the configuration unusable, which raise ConfigError.
"""

from __future__ import annotations

import os

from ..core.crypto import parse_key
from ..core.peer import Peer, parse_peer

DEFAULT_PORT = 4321
MAX_PEERS = 16
DEFAULT_DB = "/var/lib/owsync/owsync.db"
CONTROL_DIR = "/var/run/owsync"  # control sockets, one per database (so per daemon)
SUN_PATH_MAX = 107  # bytes in a Unix socket path, less the NUL


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
    """Every setting, whatever its source (key=value file, UCI, options)."""

    def __init__(self, **settings) -> None:
        self.bind_host = "::"
        self.port = DEFAULT_PORT
        self.sync_dir = "."
        self.database = DEFAULT_DB
        self.encryption_key: str | None = None
        self.plain_mode = False
        self.poll_interval = 60
        self.log_level = 2
        self.max_file_size = 16 * 1024 * 1024
        self.peers: list[Peer] = []
        self.include: list[str] = []
        self.exclude: list[str] = []
        self.control_socket: str | None = None  # None: derived from the database
        self.key_file: str | None = None  # UCI: the root-only file holding the key
        self.reload_services: bool | None = None  # None: on when sync_dir is /etc/config
        self.enabled = True  # UCI's owsync.main.enabled
        self.ubus_socket: str | None = None  # None: libubus's default
        self.versions_dir: str | None = None  # None: beside the database
        self.versions_keep = 10  # versions per file; 0: keep none
        self.versions_max_size = 1024 * 1024  # bytes of contents in the store
        self.versions_max_age = 30  # days
        self.min_protocol = 1  # 2: refuse peers that speak protocol 1 only (owsync 1.2.0)
        self.warnings: list[str] = []
        for name, value in settings.items():
            if not hasattr(self, name):
                raise TypeError(f"no setting {name!r}")
            setattr(self, name, value)

    def add_peer(self, text: str) -> None:
        peer = parse_peer(text)  # ValueError for the caller to word
        if len(self.peers) >= MAX_PEERS:
            raise ConfigError(f"too many peers: at most {MAX_PEERS} are allowed")
        self.peers.append(peer)

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
        base = self.database[:-3] if self.database.endswith(".db") else self.database
        return base + ".versions"

    def versions_limits(self):
        # lazy: the CLI imports this module for every command, most without the store
        from ..io.versions import Limits

        return Limits(self.versions_keep, self.versions_max_size, self.versions_max_age)

    @property
    def reload_enabled(self) -> bool:
        if self.reload_services is not None:
            return self.reload_services
        return os.path.normpath(self.sync_dir) == "/etc/config"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected 1/0 or true/false")


def _int_in(lo: int, hi: int | None):
    def conv(value: str) -> int:
        v = int(value.strip(), 10)
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"out of range {lo}..{hi if hi is not None else ''}")
        return v

    return conv


def _log_level(value: str) -> int:
    return min(3, max(0, int(value.strip(), 10)))


def _text(value: str) -> str:
    if not value:
        raise ValueError("empty value")
    return value


# key -> (attribute, converter); lists are handled apart
_SCALARS = {
    "bind_host": ("bind_host", _text),
    "port": ("port", _int_in(1, 65535)),
    "sync_dir": ("sync_dir", _text),
    "database": ("database", _text),
    "encryption_key": ("encryption_key", _text),
    "plain_mode": ("plain_mode", _bool),
    "poll_interval": ("poll_interval", _int_in(1, None)),
    "log_level": ("log_level", _log_level),
    "max_file_size": ("max_file_size", _int_in(1, 1 << 40)),
    "control_socket": ("control_socket", _text),
    "reload_services": ("reload_services", _bool),
    "enabled": ("enabled", _bool),
    "ubus_socket": ("ubus_socket", _text),
    "versions_dir": ("versions_dir", _text),
    "versions_keep": ("versions_keep", _int_in(0, 1000)),
    "versions_max_size": ("versions_max_size", _int_in(0, 1 << 40)),
    "versions_max_age": ("versions_max_age", _int_in(1, 36500)),
    "min_protocol": ("min_protocol", _int_in(1, 2)),
}
_LISTS = {"include": "include", "exclude": "exclude"}


def apply_setting(cfg: Config, key: str, value: str, where: str) -> None:
    """Validate and set one setting; bad values warn and keep the default."""
    if key == "peer":
        try:
            cfg.add_peer(value)
        except ValueError as exc:
            cfg.warnings.append(f"{where}: ignoring peer: {exc}")
        return
    if key in _LISTS:
        if value:
            getattr(cfg, _LISTS[key]).append(value)
        else:
            cfg.warnings.append(f"{where}: empty {key} pattern ignored")
        return
    if key not in _SCALARS:
        cfg.warnings.append(f"{where}: unknown key {key!r} ignored")
        return
    attr, conv = _SCALARS[key]
    try:
        setattr(cfg, attr, conv(value))
    except ValueError as exc:
        cfg.warnings.append(
            f"{where}: bad value for {key} ({exc}); using the default {getattr(cfg, attr)!r}"
        )


def parse_text(text: str, name: str = "config") -> Config:
    cfg = Config()
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
        apply_setting(cfg, key, value.strip(), where)
    return cfg


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
