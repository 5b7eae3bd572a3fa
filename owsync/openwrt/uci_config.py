"""The UCI source of the Config: /etc/config/owsync, section ``main`` and
the ``config group 'NAME'`` sections (one sync group each, in their order).

UCI option names are those of the settings' schema (owsync.core.settings)
and go through the same validator as the key=value file's keys
(:func:`owsync.service.config.apply_setting`): a bad value is the same error
whichever file it is in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from ..core.settings import BY_UCI, GROUP_BY_UCI, GROUP_ONLY, Setting
from ..service.config import (
    Config,
    ConfigError,
    apply_setting,
    check_groups,
    groups_from,
    not_in_main,
)

PACKAGE = "owsync"
SECTION = "main"
GROUP_TYPE = "group"  # config group 'NAME': a sync group besides main
# the name uci gives a section that has none (`uci add owsync group`): cfg + 6 hex digits
_ANONYMOUS = re.compile(r"cfg[0-9a-f]{6}")
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


def group_validation_spec() -> list[str]:
    """The init script's list for a ``config group`` section: each per-group
    option with the schema's datatype; a group's dir may be missing (the group
    waits for it), so it is checked as a path, not as an existing directory."""
    spec = []
    for name, s in GROUP_BY_UCI.items():
        if name == "dir":  # no default: a group names its own
            spec.append(f"{name}:string")
            continue
        default = "" if s.multi else s.describe_default()
        spec.append(f"{name}:{s.datatype()}" + (f":{default}" if default else ""))
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
            if name in GROUP_ONLY:
                raise not_in_main(name, path, where_opt)
            cfg.warnings.append(f"{where_opt}: unknown option ignored")
            continue
        for v in _values(setting, value, path, where_opt):
            apply_setting(cfg, setting, v, path, where_opt)
    return cfg


def _values(setting: Setting | None, value: str | tuple[str, ...], path: str, where: str):
    if isinstance(value, str):
        return (value.strip(),)  # an option where a list goes is fine
    if setting is not None and not setting.multi:
        raise ConfigError(f"{path}: {where} takes one value, not a list")
    return tuple(v.strip() for v in value)


def group_options(
    options: dict[str, str | tuple[str, ...]], path: str, where: str
) -> Iterator[tuple[str, str]]:
    """A group section's (option, value) pairs, as pyuci gives the section."""
    for name, value in options.items():
        if name.startswith("."):
            continue
        for v in _values(GROUP_BY_UCI.get(name), value, path, f"{where}.{name}"):
            yield name, v


def config_from_sections(
    sections: list[tuple[str, str, dict[str, str | tuple[str, ...]]]],
    key_file: str | None = None,
    path: str = f"{DEFAULT_UCI_DIR}/{PACKAGE}",
) -> Config:
    """A Config from the package's sections (name, type, options), in order:
    main's, then each ``group``'s; refused as a whole when one is bad."""
    by_name = {name: (kind, options) for name, kind, options in sections}
    if SECTION not in by_name:
        raise ConfigError(f"no section {PACKAGE}.{SECTION} in {path}")
    kind, main_options = by_name[SECTION]
    if kind != PACKAGE:
        raise ConfigError(f"{PACKAGE}.{SECTION} has type {kind!r}, expected {PACKAGE!r}")
    cfg = config_from_section(main_options, f"{PACKAGE}.{SECTION}", key_file, path)
    group_sections = []
    for name, kind, options in sections:
        if kind != GROUP_TYPE:
            if name != SECTION:
                cfg.warnings.append(f"{PACKAGE}.{name}: section of type {kind!r} ignored")
            continue
        if _ANONYMOUS.fullmatch(name):
            raise ConfigError(
                f"{path}: a group section has no name (its name names its database and"
                f" what the peers sync it as): uci rename {PACKAGE}.{name}=NAME"
            )
        group_sections.append((name, group_options(options, path, f"{PACKAGE}.{name}")))
    groups, warnings = groups_from(group_sections, path, PACKAGE)
    cfg.groups += groups
    cfg.warnings += warnings
    check_groups(cfg, path)
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
    path = f"{confdir or DEFAULT_UCI_DIR}/{PACKAGE}"
    try:
        u = uci.Uci(confdir=confdir) if confdir else uci.Uci()
        sections = [(name, u.get(PACKAGE, name), options)
                    for name, options in u.get_all(PACKAGE).items()]  # fmt: skip
    except uci.UciExceptionNotFound:
        raise ConfigError(f"no section {PACKAGE}.{SECTION} in {path}") from None
    except uci.UciException as exc:
        raise ConfigError(f"cannot read UCI {PACKAGE}: {exc}") from None
    return config_from_sections(sections, key_file_for(confdir), path)
