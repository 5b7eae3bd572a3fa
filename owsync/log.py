"""Logging: stderr for the interactive commands, syslog for the daemon."""

from __future__ import annotations

import logging
import os
import sys

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


def setup(level: int, stderr: bool = True, syslog: bool = False) -> None:
    log.handlers.clear()
    log.propagate = False
    log.setLevel(LEVELS[min(3, max(0, level))])
    if stderr:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(_StderrFormatter())
        log.addHandler(h)
    if syslog and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler  # only the daemon pays for it

        try:
            h = SysLogHandler(address="/dev/log", facility=SysLogHandler.LOG_DAEMON)
        except OSError:
            return
        h.ident = "owsync: "
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
