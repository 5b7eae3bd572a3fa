"""Command line, option-compatible with owsync 1.2.0."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import NamedTuple

from . import __version__
from .core.crypto import make_cipher
from .core.filters import Filter
from .core.peer import parse_peer
from .core.settings import BOOL, INT, SETTINGS, Setting
from .openwrt.uci_config import UCI_DIR_ENV, load_uci, uci_available
from .openwrt.uci_key import move_key_out_of_uci
from .service import log as logsetup
from .service.config import (
    MAIN,
    Config,
    ConfigError,
    Group,
    apply_setting,
    check_overlap,
    group_filter,
    load_file,
)

log = logging.getLogger("owsync")

# Each command imports the layers it needs itself (lazily): `owsync status` or
# `owsync sync` should not load the engine, the daemon and the version store
# (some 6 MiB more RSS), on a router.

# The clock every session uses.  Tests run the CLI through a wrapper that
# replaces it (tests/clockshift.py); there is deliberately no option for it.
CLOCK = time.time

USAGE_HEAD = """\
owsync {version} - high-availability file synchronization

Usage:
  owsync scan DIR [-i PATTERN...] [-e PATTERN...] [-b DB] [--json]
  owsync genkey
  owsync listen [OPTIONS]
  owsync connect PEER [OPTIONS]        PEER: host, host:port or [v6]:port
  owsync daemon [-c FILE | OPTIONS] [-f]
  owsync status [--json]               ask the running daemon
  owsync sync [PEER] [--wait]          make the running daemon sync now
  owsync versions [PATH] [--json]      what the version stores keep (every group's)
  owsync diff ID                       a kept version against the current file
  owsync restore PATH [ID]             put a version back (default: the newest)
  owsync restore GROUP:ID              ID: as versions lists it (GROUP:ID outside main)
  owsync vrrp INSTANCE ROLE            keepalived's transition (ROLE: MASTER, BACKUP,
                                       FAULT, STOP): note it, reconcile with every peer

Common options (in brackets, the key of the config file the option overrides):
  -c, --config FILE      key=value configuration file
"""

# Options that are not settings (those come from owsync.core.settings)
OTHER_OPTIONS = (
    (("-f", "--foreground"), "",
     "daemon: log to stderr as well as to syslog (without -f: to syslog alone, or to stderr"
     " where there is no syslog); the daemon never forks, -f or not: procd and systemd"
     " supervise the process they started"),
    (("-v", "--verbose"), "", "debug logging (log level 3)"),
    (("-q", "--quiet"), "", "errors only (log level 0)"),
    (("--uci-dir",), "DIR",
     "daemon: read UCI from DIR instead of /etc/config (also OWSYNC_UCI_DIR);"
     " without -c the daemon reads UCI"),
    (("--no-syslog",), "", "daemon: log to stderr only (procd and systemd capture it)"),
    (("-V", "--version"), "", "print the version"),
    (("-h", "--help"), "", "this help"),
)  # fmt: skip

USAGE_TAIL = """
The encryption key comes from the config file (encryption_key=) or from the
environment (OWSYNC_KEY), never from the command line.
"""


def _help_line(flags: tuple[str, ...], metavar: str, text: str) -> str:
    head = "  " + ", ".join(flags) + (f" {metavar}" if metavar else "")
    if len(head) > 24:
        head += "\n" + " " * 25
    else:
        head = head.ljust(25)
    body = textwrap.wrap(text, 79 - 25)
    return head + ("\n" + " " * 25).join(body) + "\n"


def setting_help(s: Setting) -> str:
    """A setting's help text: what it is, what it accepts, its key, its default."""
    text = ("daemon: " if s.daemon_only else "") + s.help
    if s.kind == INT:
        if s.labels:
            text += ": " + ", ".join(
                f"{v}={label}" for v, label in zip(s.values(), s.labels, strict=True)
            )
        else:
            text += f"; {s.expected()}"
    text += f" [{s.file_key}]"
    if s.kind != BOOL or s.default is None:
        default = s.describe_default()
        if s.uci_default is not None:
            default += f"; from UCI: {s.describe_default(uci=True)}"
        text += f" (default: {default})"
    return text


def usage() -> str:
    lines = [USAGE_HEAD.format(version=__version__)]
    lines += [_help_line(s.flags, s.metavar, setting_help(s)) for s in SETTINGS if s.flags]
    lines += [_help_line(f, m, t) for f, m, t in OTHER_OPTIONS]
    return "".join(lines) + USAGE_TAIL


class UsageError(Exception):
    pass


# How each option is taken: FLAG sets True, VALUE keeps the last value given,
# APPEND keeps them all.  A parser of its own, not argparse: argparse with
# gettext and locale is 0.8 MiB of every daemon's RSS, for a table this small.
FLAG, VALUE, APPEND = "flag", "value", "append"
_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")  # a value, not an option (--port -1: refused later)


class _Option(NamedTuple):
    names: tuple[str, ...]
    dest: str
    kind: str


def _options() -> list[_Option]:
    opts = [_Option(("-c", "--config"), "config", VALUE)]
    for s in SETTINGS:  # each setting's own flags, as the schema names them
        if s.flags:
            opts.append(_Option(s.flags, s.attr, FLAG if s.kind == BOOL else
                                APPEND if s.multi else VALUE))  # fmt: skip
    opts += [
        _Option(("-f", "--foreground"), "foreground", FLAG),
        _Option(("-v", "--verbose", "--debug"), "verbose", FLAG),
        _Option(("-q", "--quiet"), "quiet", FLAG),
        _Option(("--json",), "json", FLAG),
        _Option(("--wait",), "wait", FLAG),
        _Option(("--uci-dir",), "uci_dir", VALUE),
        _Option(("--no-syslog",), "no_syslog", FLAG),
        _Option(("-V", "--version"), "version", FLAG),
        _Option(("-h", "--help"), "help", FLAG),
    ]
    return opts


def parse_args(argv: list[str]) -> SimpleNamespace:
    """``command`` (None if none), ``args`` (the other positionals, wherever
    they stand) and one attribute per option.  UsageError for an unknown
    option or a missing value.  Options are spelled out (no abbreviations);
    short ones combine (``-fv``) and take a value attached (``-cFILE``), long
    ones after ``=`` or as the next argument; ``--`` ends the options."""
    table = _options()
    by_name = {name: o for o in table for name in o.names}
    ns = SimpleNamespace(**{o.dest: False if o.kind == FLAG else [] if o.kind == APPEND else None
                            for o in table})  # fmt: skip
    positionals: list[str] = []
    todo = list(argv)
    while todo:
        arg = todo.pop(0)
        if arg == "--":
            positionals += todo
            break
        if not arg.startswith("-") or arg == "-" or _NUMBER.match(arg):
            positionals.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, attached = arg.partition("=")
            value: str | None = attached if eq else None
        else:  # -x; -xVALUE or -x=VALUE for an option with a value; -xy: -x -y
            name, rest, value = arg[:2], arg[2:], None
            takes_value = name in by_name and by_name[name].kind != FLAG
            if rest.startswith("=") or (rest and takes_value):
                value = rest[1:] if rest.startswith("=") else rest
            elif rest:
                todo.insert(0, "-" + rest)
        o = by_name.get(name)
        if o is None:
            raise UsageError(f"unrecognized arguments: {arg}")
        shown = "/".join(o.names)
        if o.kind == FLAG:
            if value is not None:
                raise UsageError(f"argument {shown}: ignored explicit argument {value!r}")
            setattr(ns, o.dest, True)
            continue
        if value is None:
            if not todo or (todo[0].startswith("-") and todo[0] != "-"
                            and not _NUMBER.match(todo[0])):  # fmt: skip
                raise UsageError(f"argument {shown}: expected one argument")
            value = todo.pop(0)
        if o.kind == APPEND:
            getattr(ns, o.dest).append(value)
        else:
            setattr(ns, o.dest, value)
    ns.command = positionals[0] if positionals else None
    ns.args = positionals[1:]
    return ns


def build_config(opts, uci: bool = False) -> Config:
    """The config file (or UCI, for the daemon), then the command line on top of it."""
    if opts.config:
        cfg = load_file(opts.config)
    elif opts.uci_dir or (uci and (os.environ.get(UCI_DIR_ENV) or uci_available())):
        cfg = load_uci(opts.uci_dir)
    else:
        cfg = Config()  # options only, as owsync 1.2.0 allows
    for s in SETTINGS:
        if not s.flags:
            continue
        given = getattr(opts, s.attr)
        if s.kind == BOOL:
            if given:
                setattr(cfg, s.attr, True)
            continue
        for text in given if s.multi else [] if given is None else [given]:
            try:
                apply_setting(cfg, s, text, "command line", s.flags[-1])
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
    if cfg.groups and (opts.sync_dir or opts.include or opts.exclude):
        check_overlap(cfg, "command line")  # main's dir or patterns changed under the groups
    if opts.verbose:
        cfg.log_level = 3
    if opts.quiet:
        cfg.log_level = 0
    return cfg


def make_context(cfg: Config, encrypted: bool = True, group: Group | None = None):
    """The context of one group (main by default): its directory, filters,
    database and version store; the node's key and limits."""
    from .service.context import Context

    g = cfg.main_group() if group is None else group
    key = cfg.key_bytes() if encrypted else None
    return Context(
        root=g.sync_dir,
        db_path=cfg.group_database(g.name),
        filter=group_filter(cfg, g),  # every group's owsync state in its tree left out
        cipher=make_cipher(key),
        max_file_size=cfg.max_file_size,
        clock=CLOCK,
        versions_dir=cfg.group_versions_path(g.name),
        versions=cfg.versions_limits(),
        min_protocol=cfg.min_protocol,
    )


def _check_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise ConfigError(f"sync directory {path} does not exist or is not a directory")


def _warn_filters(cfg: Config) -> None:
    if not cfg.include:
        log.warning("no include pattern: nothing will be synced (add -i '*' or include=*)")


# --- commands ---------------------------------------------------------------


def cmd_genkey(opts, args) -> int:
    print(os.urandom(32).hex())
    return 0


def cmd_scan(opts, args) -> int:
    from .core.protocol import record_to_wire
    from .io import database, scanner
    from .service.context import Context

    if len(args) > 1:
        raise UsageError("scan takes one directory")
    if args:
        opts.sync_dir = args[0]
    cfg = _setup(opts)
    flt = Filter(cfg.include, cfg.exclude)
    ctx = Context(cfg.sync_dir, cfg.database, flt, cipher=None, min_protocol=cfg.min_protocol)
    records = database.load(cfg.database, set_aside=False, root=os.path.realpath(cfg.sync_dir))
    now_ms = int(CLOCK() * 1000)
    res = scanner.scan(cfg.sync_dir, records, flt, ctx.own_relpaths(), now_ms)
    shown = sorted((r for r in res.records.values() if flt(r.path)), key=lambda r: r.path)
    if opts.json:
        json.dump([record_to_wire(r) for r in shown], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    lines = []
    for r in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.mtime // 1000))
        stamp = f"{when}.{r.mtime % 1000:03d}Z"
        if r.deleted:
            lines.append(f"{r.path}\tdeleted\t-\t{r.mode:04o}\t{stamp}\n")
        else:
            lines.append(f"{r.path}\t{r.hash}\t{r.size}\t{r.mode:04o}\t{stamp}\n")
    live = sum(1 for r in shown if not r.deleted)
    lines.append(f"# {live} files, {len(shown) - live} tombstones\n")
    sys.stdout.write("".join(lines))
    return 0


def _setup(opts) -> Config:
    """Configuration and logging for the one-shot commands, with their checks."""
    cfg = build_config(opts)
    logsetup.setup(cfg.log_level)
    for w in cfg.warnings:
        log.warning("%s", w)
    _check_dir(cfg.sync_dir)
    _warn_filters(cfg)
    return cfg


def _prepare(opts):
    cfg = _setup(opts)
    return cfg, make_context(cfg, encrypted=not cfg.plain_mode)


def _stop_on_signals(on_stop) -> None:
    def handler(signum, frame):
        on_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _fewer_collections() -> None:
    """A session keeps a record or two per file it syncs, and makes almost
    no garbage cycles: Python's default, a collection every 700 new
    objects, costs a first sync of 10,000 files 40-120 ms of CPU on each
    side; one every 10,000, 20-50 ms.  For connect and listen, which run
    sessions and nothing else; the daemon keeps the default (its memory is
    what a router counts)."""
    gc.set_threshold(10_000, 20, 20)


def cmd_connect(opts, args) -> int:
    from .io.net import connect
    from .service.engine import run_session

    if len(args) != 1:
        raise UsageError("connect takes one PEER (host, host:port or [v6]:port)")
    try:
        peer = parse_peer(args[0])
    except ValueError as exc:
        raise UsageError(f"bad PEER: {exc}") from None
    cfg, ctx = _prepare(opts)
    _fewer_collections()
    stop = threading.Event()
    ctx.should_stop = stop.is_set
    _stop_on_signals(stop.set)
    try:
        sock = connect(peer, cfg.port)
    except OSError as exc:
        log.error("cannot connect to %s: %s", peer, exc.strerror or exc)
        return 1
    result = run_session(sock, ctx, str(peer), initiator=True, log_ok=False)
    print(result.summary())
    return 0 if result.ok else 1


def cmd_listen(opts, args) -> int:
    from .io.net import Listener, bind, peer_label
    from .service.engine import run_session

    if args:
        raise UsageError("listen takes no arguments")
    cfg, ctx = _prepare(opts)
    try:
        sock = bind(cfg.bind_host, cfg.port)
    except OSError as exc:
        detail = exc.strerror or exc
        raise ConfigError(f"cannot listen on {cfg.bind_host} port {cfg.port}: {detail}") from None
    _fewer_collections()
    stop = threading.Event()
    ctx.should_stop = stop.is_set

    def handler(csock, label, on_hello):
        run_session(csock, ctx, label, on_hello)

    listener = Listener(sock, handler)

    def on_stop():
        stop.set()
        listener.stop()

    _stop_on_signals(on_stop)
    log.info("listening on %s", peer_label(listener.address))
    listener.serve_forever()
    return 0


def _one_malloc_arena() -> None:
    """glibc gives each thread that allocates an arena of its own (up to 8 a
    core), 0.1-0.3 MiB resident each in a daemon whose threads mostly wait
    and take turns under the GIL anyway: one arena serves them all (1 MiB
    less RSS).  musl, OpenWrt's libc, has no per-thread arenas; an explicit
    MALLOC_ARENA_MAX is left as it is."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    import ctypes  # lazy, for memory: the daemon loads it anyway, the other commands need not

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-8, 1)  # M_ARENA_MAX, before any thread starts


def cmd_daemon(opts, args) -> int:
    """Run the daemon in the foreground, always: supervisors (procd, systemd)
    track the process they started.  As in 1.2.0, -f adds stderr to the log.

    Without -f the log is syslog alone, except a fatal error at start, which
    goes to stderr (as 1.2.0 prints it) and not to syslog as well, unless
    stderr is a terminal: procd captures the daemon's stderr into the log,
    so it appears there once, as daemon.err.
    """
    # A SIGHUP (procd's reload) may come while the modules below load, before
    # the daemon's own handler is in place: its default would end the process.
    # Held here, it is a reload once the daemon runs.
    early_hup = threading.Event()
    signal.signal(signal.SIGHUP, lambda *_: early_hup.set())
    from .openwrt import ubus_bridge
    from .service.control import ControlError
    from .service.daemon import Daemon

    if args:
        raise UsageError("daemon takes no arguments")
    _one_malloc_arena()
    to_stderr = logsetup.setup(
        2, stderr=opts.foreground or opts.no_syslog, syslog=not opts.no_syslog
    )
    try:
        cfg = build_config(opts, uci=True)
        logsetup.set_level(cfg.log_level)
        for w in cfg.warnings:
            log.warning("%s", w)
        if not cfg.enabled:
            raise ConfigError("owsync is disabled (uci set owsync.main.enabled=1)")
        key_out_of_uci(opts, cfg)
        d = Daemon(cfg, reload=lambda: key_out_of_uci(opts, build_config(opts, uci=True)))
        d.clock = CLOCK
        ubus_bridge.attach(d)  # started with the daemon, as its front end
        return d.run(reload_asked=early_hup)
    except (ConfigError, ControlError) as exc:
        why = str(exc)
    except OSError as exc:
        why = f"cannot start: {exc.strerror or exc}"
    if to_stderr or sys.stderr.isatty():
        log.error("%s", why)  # the log (and, by hand, the terminal too)
    if not to_stderr:
        # stderr, as 1.2.0 prints it; a supervisor that captures it (procd's
        # `stderr 1`) files the line under the daemon's own name and PID, so
        # it goes there bare, and not to syslog as well: one line, one prefix
        print(f"owsync: error: {why}" if sys.stderr.isatty() else why, file=sys.stderr)
    return 1


def key_out_of_uci(opts, cfg: Config) -> Config:
    """A key the daemon found in UCI (``uci set owsync.main.key``) moves to its
    root-only file, and only that option leaves UCI (openwrt.uci_key); when
    it cannot, the daemon says why and runs with the key where it is."""
    if cfg.key_file and cfg.encryption_key and cfg.enabled:  # from UCI, and in use
        try:
            moved = move_key_out_of_uci(opts.uci_dir, cfg.key_file)
        except ConfigError as exc:
            log.warning("the key stays in UCI: %s", exc)
        else:
            if moved:
                log.info("%s", moved)
    return cfg


def _control(opts, req: dict, timeout: float | None = 10.0) -> dict:
    from .service.control import ControlError, request

    cfg = build_config(opts, uci=True)  # the daemon's own sources find its socket
    try:
        return request(cfg.control_path(), req, timeout)
    except ControlError as exc:
        raise ConfigError(str(exc)) from None


def _when(t: float | None) -> str:
    return "-" if not t else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _protocol(version: int | None) -> str:
    """The protocol a peer spoke last: v2, v1 (that of owsync 1.2.0) or -."""
    if not version:
        return "-"
    return "v1 (1.2.0)" if version == 1 else f"v{version}"


def _roles(vrrp: dict) -> str:
    """VRRP roles: ``VI_1 MASTER since ...; VI_2 BACKUP since ...``."""
    return "; ".join(
        f"{name} {v['role']} since {_when(v['since'])}"
        + (" (reconciling)" if v.get("reconciling") else "")
        for name, v in vrrp.items()
    )


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _group_peers(peers: dict) -> str:
    """Each peer's state for a group: ``192.168.1.2 synced, 192.168.1.3 v1``."""
    return ", ".join(f"{addr} {state}" for addr, state in peers.items()) or "-"


def format_groups(groups: list[dict]) -> list[str]:
    """The sync groups' table, and why a waiting group waits; nothing while
    main is the only group (the first line describes it)."""
    if not any(g["name"] != MAIN for g in groups):
        return []
    rows = [("GROUP", "DIR", "STATE", "FILES", "LAST CHANGE", "ACTIONS", "PEERS")]
    for g in groups:
        actions = [f"reload {s}" for s in g.get("reload") or ()]
        actions += [f"restart {s}" for s in g.get("restart") or ()]
        rows.append((
            g["name"], g["dir"], g["state"], str(g.get("files", 0)), _when(g.get("last_change")),
            ", ".join(actions) or "-", _group_peers(g.get("peers") or {}),
        ))  # fmt: skip
    lines = _table(rows)
    lines += [f"{g['name']} waits: {g['reason']}" for g in groups if g.get("reason")]
    return lines


def format_status(st: dict) -> str:
    """``owsync status`` without --json: a line, the groups, the peers' table, recent activity."""
    up = st["uptime"]
    lines = [
        f"owsync {st['version']}, up {up // 3600}h{up % 3600 // 60:02d}m, {st['sync_dir']},"
        f" {'encrypted' if st['encryption'] else 'PLAIN'}, {st['files']} files,"
        f" {st['tombstones']} tombstones"
    ]
    if st.get("min_protocol") == 2:
        lines.append("minimum protocol 2: peers that speak only v1 (owsync 1.2.0) are refused")
    if st.get("vrrp"):
        lines.append(f"VRRP here: {_roles(st['vrrp'])}")
    lines += format_groups(st.get("groups") or [])
    rows = [("PEER", "STATE", "LAST SUCCESS", "RESULT", "PROTO", "RX", "TX", "DEL", "FAILS",
             "NEXT RETRY")]  # fmt: skip
    for p in st["peers"]:
        live = p.get("live")
        if live:  # a live link: its figures since it came up
            rows.append((
                p["address"], f"connected {_when(live['connected_since'])}",
                _when(live["last_update_received"] or live["last_update_sent"]), "live",
                "v2 live", str(live["files_received"]), str(live["files_sent"]),
                str(live["deleted"]), "0", "-",
            ))  # fmt: skip
            continue
        rows.append((
            p["address"], p["state"], _when(p["last_success"]), p["last_result"] or "-",
            _protocol(p.get("protocol")), str(p["received"]), str(p["sent"]),
            str(p["deleted"]), str(p["consecutive_failures"]), _when(p["next_retry"]),
        ))  # fmt: skip
    lines += _table(rows)
    for p in st["peers"]:
        if p.get("vrrp"):
            lines.append(f"VRRP at {p['address']}: {_roles(p['vrrp'])}")
    for e in st.get("history", [])[:5]:
        what = "ok" if e["ok"] else f"failed: {e['error']}"
        files = ", ".join(e["arrived"] + [f"-{p}" for p in e["removed"]])
        group = e.get("group", MAIN)
        where = "" if group == MAIN else f" [{group}]"
        lines.append(
            f"{_when(e['time'])} {e['direction']} {e['peer']}{where}: {what};"
            f" received {e['received']},"
            f" sent {e['sent']}, deleted {e['deleted']}" + (f" ({files})" if files else "")
        )
    return "\n".join(lines) + "\n"


def cmd_status(opts, args) -> int:
    if args:
        raise UsageError("status takes no arguments")
    st = _control(opts, {"method": "status"})
    if opts.json:
        json.dump(st, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0 if st.get("ok") else 1
    sys.stdout.write(format_status(st))
    return 0


def cmd_sync(opts, args) -> int:
    if len(args) > 1:
        raise UsageError("sync takes at most one PEER")
    req = {"method": "sync", "wait": opts.wait}
    if args:
        req["peer"] = args[0]
    reply = _control(opts, req, timeout=None if opts.wait else 10.0)
    if not reply.get("ok") and "error" in reply:
        raise ConfigError(reply["error"])
    if opts.json:
        print(json.dumps(reply))
    elif opts.wait:
        for r in reply["results"]:
            outcome = "ok" if r["ok"] else f"failed: {r['error']}"
            print(
                f"{r['peer']}: {outcome}; received {r['received']}, sent {r['sent']},"
                f" deleted {r['deleted']}, bytes {r['bytes']}, seconds {r['seconds']:.2f}"
            )
    else:
        print("started: " + ", ".join(reply["started"]))
    return 0 if reply.get("ok") else 1


def _inside(path: str, top: str) -> str | None:
    """PATH relative to the directory TOP, or None when it is not inside it."""
    rel = os.path.relpath(path, os.path.abspath(top))
    return None if rel == ".." or rel.startswith("../") else rel


def _locate(cfg: Config, path: str) -> tuple[str | None, str]:
    """(group, PATH as its store names it).  An absolute PATH names the group
    whose directory holds it (the deepest, were two nested); a relative one
    is relative to a group's directory, and which is not known (None)."""
    if not os.path.isabs(path):
        return None, path.strip("/")
    found = [(g, rel) for g in cfg.all_groups() if (rel := _inside(path, g.sync_dir))]
    if not found:
        dirs = ", ".join(g.sync_dir for g in cfg.all_groups())
        raise UsageError(f"{path} is not inside a synced directory ({dirs})")
    g, rel = max(found, key=lambda f: len(os.path.abspath(f[0].sync_dir)))
    return g.name, rel


def cmd_versions(opts, args) -> int:
    from .service import versions_view

    if len(args) > 1:
        raise UsageError("versions takes at most one PATH")
    cfg = build_config(opts, uci=True)
    group, path = _locate(cfg, args[0]) if args else (None, None)
    out = versions_view.listing(cfg, path, group)
    if opts.json:
        print(json.dumps(out, indent=1))
    else:
        sys.stdout.write(versions_view.format_listing(out["versions"]))
    return 0


def _version_ref(cfg: Config, text: str) -> tuple[str, int]:
    """(group, id) of ``ID`` (main) or ``GROUP:ID``; a group the configuration lacks is refused."""
    from .service import versions_view

    try:
        group, vid = versions_view.parse_ref(text)
        versions_view.find_group(cfg, group)
    except (ValueError, LookupError) as exc:
        raise UsageError(str(exc)) from None
    return group, vid


def cmd_diff(opts, args) -> int:
    from .service import versions_view

    if len(args) != 1:
        raise UsageError("diff takes one version (ID, or GROUP:ID outside main)")
    cfg = build_config(opts, uci=True)
    group, vid = _version_ref(cfg, args[0])
    try:
        out = versions_view.diff(cfg, versions_view.ref(group, vid))
    except LookupError as exc:
        raise ConfigError(str(exc)) from None
    label = versions_view.ref(group, vid)
    if not out["text"]:
        print(f"version {label} of {out['path']} is not text")
    elif not out["diff"]:
        print(f"version {label} of {out['path']} is the current content")
    else:
        sys.stdout.write(out["diff"])
    return 0


def _is_group_ref(cfg: Config, text: str) -> bool:
    """Whether a lone argument of restore is GROUP:ID (of a configured group), not a PATH."""
    name, colon, number = text.rpartition(":")
    return bool(colon) and number.isdigit() and any(g.name == name for g in cfg.all_groups())


def cmd_restore(opts, args) -> int:
    """Through the running daemon (it owns the directories), else directly."""
    from .io.database import LockBusy
    from .service import versions_view
    from .service.control import ControlError, NotRunning, request

    if not 1 <= len(args) <= 2:
        raise UsageError("restore takes a PATH and, optionally, a version; or GROUP:ID")
    cfg = build_config(opts, uci=True)
    if len(args) == 1 and _is_group_ref(cfg, args[0]):
        group, vid = _version_ref(cfg, args[0])
        label = versions_view.ref(group, vid)
        kept = versions_view.listing(cfg, None, group)["versions"]
        found = next((v for v in kept if v["id"] == vid), None)
        if found is None:
            raise ConfigError(f"no version {label} (owsync versions lists them)")
        path = found["path"]
    else:
        where, path = _locate(cfg, args[0])
        kept = versions_view.listing(cfg, path, where)["versions"]
        if len(args) == 2:
            group, vid = _version_ref(cfg, args[1])
            if not any(v["id"] == vid and v["group"] == group for v in kept):
                shown = versions_view.ref(group, vid)
                raise ConfigError(f"no version {shown} of {path} (owsync versions {args[0]})")
        elif kept:
            group, vid = kept[0]["group"], kept[0]["id"]
        else:
            raise ConfigError(f"no version of {path} is kept")
        label = versions_view.ref(group, vid)
    try:
        reply = request(cfg.control_path(), {"method": "restore", "id": label}, 30.0)
    except NotRunning:
        from .service.engine import restore

        ctx = make_context(cfg, encrypted=False, group=versions_view.find_group(cfg, group))
        try:
            reply = {"ok": True, **restore(ctx, vid)}
        except (LookupError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        except LockBusy:
            raise ConfigError("a sync session is using the directory: try again") from None
    except ControlError as exc:
        raise ConfigError(str(exc)) from None
    if not reply.get("ok"):
        raise ConfigError(reply.get("error", "restore failed"))
    if reply.get("unchanged"):
        print(f"{path} already holds version {label}")
    else:
        print(f"restored {path} from version {label}")
    return 0


def cmd_vrrp(opts, args) -> int:
    """keepalived's notify script, where there is no ubus: the same as
    ``ubus call owsync vrrp``."""
    if len(args) != 2:
        raise UsageError("vrrp takes an INSTANCE and a ROLE (MASTER, BACKUP or FAULT)")
    reply = _control(opts, {"method": "vrrp", "instance": args[0], "role": args[1]})
    if not reply.get("ok"):
        raise ConfigError(reply.get("error", "the daemon refused the request"))
    if opts.json:
        print(json.dumps(reply))
    elif reply["role"] == "STOP":
        print(f"{reply['instance']}: stopped, no role here any more")
    else:
        print(f"{reply['instance']}: {reply['role']} since {_when(reply['since'])};"
              f" reconciling with {', '.join(reply['peers']) or 'no peer'}")  # fmt: skip
    return 0


COMMANDS = {
    "versions": cmd_versions,
    "diff": cmd_diff,
    "restore": cmd_restore,
    "daemon": cmd_daemon,
    "status": cmd_status,
    "sync": cmd_sync,
    "vrrp": cmd_vrrp,
    "genkey": cmd_genkey,
    "scan": cmd_scan,
    "connect": cmd_connect,
    "listen": cmd_listen,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_args(argv)
        if opts.help:
            sys.stdout.write(usage())
            return 0
        if opts.version:
            print(f"owsync {__version__}")
            return 0
        if not opts.command:
            raise UsageError("no command given (try 'owsync --help')")
        fn = COMMANDS.get(opts.command)
        if fn is None:
            raise UsageError(f"unknown command {opts.command!r} (try 'owsync --help')")
        return fn(opts, opts.args)
    except UsageError as exc:
        print(f"owsync: error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"owsync: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (owsync status --json | head): not an error to report
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a defect: one line, never a traceback
        log.debug("internal error", exc_info=True)
        print(
            f"owsync: internal error: {type(exc).__name__}: {exc}"
            " (please report it, with the output of the same command run with -v)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
