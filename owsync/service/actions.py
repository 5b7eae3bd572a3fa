"""Service actions: the init scripts a group's arrivals reload or restart.

Minimal version written by the engine's branch so that the daemon can call
it; the configuration's branch owns this module (same signature).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from .config import Group

log = logging.getLogger("owsync")

INIT_DIR = "/etc/init.d"
ACTION_TIMEOUT = 60.0


def run_actions(
    group: Group, changed: Sequence[str], init_dir: str | None = None
) -> list[tuple[str, str, int]]:
    """Run each of ``group``'s services once after a batch of arrivals
    (``changed``): ``INIT_DIR/NAME reload|restart``; (service, action, exit
    status) for each run.  Nothing when nothing changed."""
    if not changed or not (group.reload or group.restart):
        return []
    import subprocess  # lazy: 0.3 MiB of every daemon, for the groups with actions only

    base = init_dir or os.environ.get("OWSYNC_INIT_DIR") or INIT_DIR
    out = []
    for action, names in (("reload", group.reload), ("restart", group.restart)):
        for name in names:
            script = os.path.join(base, name)
            try:
                rc = subprocess.run(
                    [script, action],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=ACTION_TIMEOUT,
                    check=False,
                ).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.error("group %s: %s %s failed: %s", group.name, script, action, exc)
                rc = 127
            else:
                level = logging.INFO if rc == 0 else logging.ERROR
                log.log(level, "group %s: %s %s: exit status %d", group.name, script, action, rc)
            out.append((name, action, rc))
    return out
