"""The UCI source of the Config: /etc/config/owsync, section ``main``.

UCI option names are those of the settings' schema (owsync.core.settings)
and go through the same validator as the key=value file's keys
(:func:`owsync.service.config.apply_setting`): a bad value is the same error
whichever file it is in.
"""

from __future__ import annotations

import os

from ..core.settings import BY_UCI
from ..service.config import Config, ConfigError, apply_setting

PACKAGE = "owsync"
SECTION = "main"
UCI_DIR_ENV = "OWSYNC_UCI_DIR"
DEFAULT_UCI_DIR = "/etc/config"

# UCI option -> its setting (owsync.core.settings): names, types, ranges, defaults
OPTIONS = BY_UCI
LISTS = tuple(name for name, s in OPTIONS.items() if s.multi)

# Defaults that differ from the key=value format's (the schema's uci_default):
# on OpenWrt the synced directory is /etc/config, and the database must
# survive a reboot (/var is a tmpfs), so it lives on flash beside it.
UCI_DEFAULTS = {s.attr: s.uci_default for s in OPTIONS.values() if s.uci_default is not None}


def validation_spec() -> list[str]:
    """The init script's ``uci_load_validate`` list, as the schema has it.

    ``'option:datatype:default'`` for each option, in the schema's order; no
    default where it is derived (the daemon works it out), a list, or holds a
    ':' (validate_data cannot take one in a default).  The shipped init
    script carries this list verbatim; a test holds it to the schema.
    """
    spec = []
    for name, s in OPTIONS.items():
        default = "" if s.multi else s.describe_default(uci=True)
        derived = s.uci_default_value() is None
        keep = default and not derived and ":" not in default
        spec.append(f"{name}:{s.datatype()}" + (f":{default}" if keep else ""))
    return spec


def key_file_for(confdir: str | None) -> str:
    """The key's file beside the UCI directory: /etc/config -> /etc/owsync/key.

    The key is kept out of UCI, which LuCI reads whole, in a root-only file;
    its path is not an option, so that no UCI writer can aim key writes (LuCI's
    "set key") at another file.
    """
    parent = os.path.dirname(os.path.abspath(confdir or DEFAULT_UCI_DIR))
    return os.path.join(parent, "owsync", "key")


def config_from_section(
    options: dict[str, str | tuple[str, ...]],
    where: str,
    key_file: str | None = None,
    path: str = f"{DEFAULT_UCI_DIR}/{PACKAGE}",
) -> Config:
    """A Config from the options of the owsync.main section, as pyuci returns them.

    ``where`` names the section (owsync.main), ``path`` its file: a bad value
    is a ConfigError naming both, the option and what it accepts.
    """
    cfg = Config(**UCI_DEFAULTS, key_file=key_file)
    for name, value in options.items():
        if name.startswith("."):
            continue
        where_opt = f"{where}.{name}"
        setting = OPTIONS.get(name)
        if setting is None:
            cfg.warnings.append(f"{where_opt}: unknown option ignored")
            continue
        if isinstance(value, str):
            values: tuple[str, ...] = (value,)  # an option where a list goes is fine
        elif setting.multi:
            values = tuple(value)
        else:
            raise ConfigError(f"{path}: {where_opt} takes one value, not a list")
        for v in values:
            apply_setting(cfg, setting, v.strip(), path, where_opt)
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
    path = f"{confdir or DEFAULT_UCI_DIR}/{PACKAGE}"
    return config_from_section(options, f"{PACKAGE}.{SECTION}", key_file_for(confdir), path)
