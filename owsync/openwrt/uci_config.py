"""The UCI source of the Config: /etc/config/owsync, section ``main``.

UCI option names map onto the key=value file's keys and go through the same
validators (:func:`owsync.config.apply_setting`), so a bad value gets the
same warning whichever file it is in.
"""

from __future__ import annotations

import os

from ..service.config import Config, ConfigError, apply_setting

PACKAGE = "owsync"
SECTION = "main"
UCI_DIR_ENV = "OWSYNC_UCI_DIR"
DEFAULT_UCI_DIR = "/etc/config"

# UCI option -> key of the key=value format
OPTIONS = {
    "enabled": "enabled",
    "host": "bind_host",
    "port": "port",
    "dir": "sync_dir",
    "db": "database",
    "key": "encryption_key",
    "plain_mode": "plain_mode",
    "poll_interval": "poll_interval",
    "log_level": "log_level",
    "max_file_size": "max_file_size",
    "reload_services": "reload_services",
    "control_socket": "control_socket",
    "ubus_socket": "ubus_socket",
    "versions_dir": "versions_dir",
    "versions_keep": "versions_keep",
    "versions_max_size": "versions_max_size",
    "versions_max_age": "versions_max_age",
    "min_protocol": "min_protocol",
}
LISTS = ("peer", "include", "exclude")

# Defaults that differ from the key=value format's: on OpenWrt the synced
# directory is /etc/config, and the database must survive a reboot (/var is
# a tmpfs), so it lives on flash beside it.
UCI_DEFAULTS = {"sync_dir": "/etc/config", "database": "/etc/owsync/owsync.db"}


def key_file_for(confdir: str | None) -> str:
    """The key's file beside the UCI directory: /etc/config -> /etc/owsync/key.

    The key is kept out of UCI, which LuCI reads whole, in a root-only file;
    its path is not an option, so that no UCI writer can aim key writes (LuCI's
    "set key") at another file.
    """
    parent = os.path.dirname(os.path.abspath(confdir or DEFAULT_UCI_DIR))
    return os.path.join(parent, "owsync", "key")


def config_from_section(
    options: dict[str, str | tuple[str, ...]], where: str, key_file: str | None = None
) -> Config:
    """A Config from the options of the owsync.main section, as pyuci returns them."""
    cfg = Config(**UCI_DEFAULTS, key_file=key_file)
    for name, value in options.items():
        if name.startswith("."):
            continue
        where_opt = f"{where}.{name}"
        if name in LISTS:
            values = (value,) if isinstance(value, str) else tuple(value)
            for v in values:
                apply_setting(cfg, name, v.strip(), where_opt)
        elif name in OPTIONS:
            if not isinstance(value, str):
                cfg.warnings.append(f"{where_opt}: expected an option, not a list; ignored")
                continue
            apply_setting(cfg, OPTIONS[name], value.strip(), where_opt)
        else:
            cfg.warnings.append(f"{where_opt}: unknown option ignored")
    return cfg


def uci_available() -> bool:
    try:
        import uci  # noqa: F401  # lazy: optional binding, absent off OpenWrt
    except ImportError:
        return False
    return True


def load_uci(confdir: str | None = None) -> Config:
    """Read owsync.main with pyuci; ConfigError when it cannot be had."""
    try:
        import uci  # lazy: optional binding, absent off OpenWrt
    except ImportError:
        raise ConfigError(
            "no configuration: pass -c FILE (UCI cannot be read: the pyuci module is missing)"
        ) from None
    confdir = confdir or os.environ.get(UCI_DIR_ENV) or None
    try:
        u = uci.Uci(confdir=confdir) if confdir else uci.Uci()
        kind = u.get(PACKAGE, SECTION)
        options = u.get_all(PACKAGE, SECTION)
    except uci.UciExceptionNotFound:
        where = confdir or DEFAULT_UCI_DIR
        raise ConfigError(f"no section {PACKAGE}.{SECTION} in {where}/{PACKAGE}") from None
    except uci.UciException as exc:
        raise ConfigError(f"cannot read UCI {PACKAGE}: {exc}") from None
    if kind != PACKAGE:
        raise ConfigError(f"{PACKAGE}.{SECTION} has type {kind!r}, expected {PACKAGE!r}")
    return config_from_section(options, f"{PACKAGE}.{SECTION}", key_file_for(confdir))
