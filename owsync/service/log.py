"""Logging: stderr for the interactive commands, syslog for the daemon."""

from __future__ import annotations

import logging
import os
import sys
import traceback

LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

log = logging.getLogger("owsync")


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"owsync: {record.levelname.lower()}: {msg}"
        return f"owsync: {msg}"


class _SyslogHandler(logging.Handler):
    """syslog(3) with the PID and each record's own priority.

    On OpenWrt, logread then shows ``daemon.info owsync[PID]: message``: one
    prefix, and warnings as warnings (procd would file every line a daemon
    writes to stderr as daemon.err, behind a prefix of its own).
    """

    def __init__(self) -> None:
        super().__init__()
        import syslog  # lazy: only the daemon logs to syslog

        self._syslog = syslog
        self._priority = {
            logging.DEBUG: syslog.LOG_DEBUG,
            logging.INFO: syslog.LOG_INFO,
            logging.WARNING: syslog.LOG_WARNING,
            logging.ERROR: syslog.LOG_ERR,
        }
        syslog.openlog("owsync", syslog.LOG_PID, syslog.LOG_DAEMON)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg += " (" + " ".join(traceback.format_exception_only(record.exc_info[1])) + ")"
            priority = self._priority.get(record.levelno, self._syslog.LOG_ERR)
            self._syslog.syslog(priority, msg.replace("\n", " ").strip())
        except Exception:
            self.handleError(record)


def syslog_available() -> bool:
    return os.path.exists("/dev/log")


def setup(level: int, stderr: bool = True, syslog: bool = False) -> bool:
    """Logging for a command: to stderr, to syslog, or both.

    Without a syslog socket (a container, a bare chroot) the lines go to
    stderr instead of nowhere.  Returns whether they go to stderr.
    """
    log.handlers.clear()
    log.propagate = False
    set_level(level)
    if syslog and syslog_available():
        log.addHandler(_SyslogHandler())
    elif syslog:
        stderr = True
    if stderr:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(_StderrFormatter())
        log.addHandler(h)
    return stderr


def set_level(level: int) -> None:
    log.setLevel(LEVELS[min(3, max(0, level))])
