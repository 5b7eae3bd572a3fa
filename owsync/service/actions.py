"""A group's service actions: after a batch of arrivals, each named service once.

A group names init scripts to reload and to restart (``list reload``,
``list restart``).  After a batch of its files has arrived and is in place
(one session, one live-link commit batch), :func:`run_actions` runs
``/etc/init.d/NAME reload`` for each service to reload, then ``/etc/init.d/NAME
restart`` for each to restart: each once, whatever the number of files, in
the order the group lists them; a service listed under both is restarted
only (a restart does what a reload does).  Each run is logged with its exit
status: info when 0, an error otherwise (a failed action is a failure); a
missing script is a warning.  main's services keep procd's config.change
path and are not run from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from .config import Group

log = logging.getLogger("owsync")

INIT_DIR_ENV = "OWSYNC_INIT_DIR"  # tests, or another init system's scripts
DEFAULT_INIT_DIR = "/etc/init.d"
ACTION_TIMEOUT = 60.0  # seconds an init script may take (a restart waits for its stop)
DONE = {"reload": "reloaded", "restart": "restarted"}
TIMED_OUT = 124  # the exit status reported for a script stopped at the timeout (as timeout(1))


def planned(group: Group) -> list[tuple[str, str]]:
    """(service, action) in the order they run: reloads, then restarts, each once."""
    restarts = list(dict.fromkeys(group.restart))
    reloads = [s for s in dict.fromkeys(group.reload) if s not in restarts]
    return [(s, "reload") for s in reloads] + [(s, "restart") for s in restarts]


def run_actions(
    group: Group,
    changed: Sequence[str],
    init_dir: str | None = None,
    timeout: float = ACTION_TIMEOUT,
) -> list[tuple[str, str, int]]:
    """Run the group's actions once for a batch of ``changed`` paths.

    Returns (service, action, exit status) for each script run; nothing when
    no path changed or the group names no service.  A missing script is not
    run (a warning); a script still running after ``timeout`` seconds is
    killed and reported as exit status 124.
    """
    if not changed:
        return []
    todo = planned(group)
    if not todo:
        return []
    base = init_dir or os.environ.get(INIT_DIR_ENV) or DEFAULT_INIT_DIR
    done = []
    for service, action in todo:
        script = os.path.join(base, service)
        if not os.access(script, os.X_OK) or not os.path.isfile(script):
            log.warning("group %s: no init script %s: %s not %s after %d file(s) arrived",
                        group.name, script, service, DONE[action], len(changed))  # fmt: skip
            continue
        status, detail = _run(script, action, timeout)
        if status == 0:
            log.info("group %s: %s %s: exit 0 (%d file(s) arrived)",
                     group.name, script, action, len(changed))  # fmt: skip
        else:
            log.error("group %s: %s %s failed: %s", group.name, script, action, detail)
        done.append((service, action, status))
    return done


def _run(script: str, action: str, timeout: float) -> tuple[int, str]:
    """Run one init script; (exit status, what went wrong in words).

    Its stderr goes to a temporary file, not a pipe: a service it starts may
    keep the descriptor open for its whole life.  Only the script's own
    process is waited for, and killed at the timeout: what it started (the
    service itself, where no procd starts it) is left alone."""
    # lazy: a daemon whose groups name no service never loads them (tempfile
    # brings shutil and random: test_memory's deny-list)
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [script, action], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, cwd="/", start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            return 126, f"cannot run it: {exc.strerror or exc}"
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its PID
            proc.wait()
            return TIMED_OUT, f"still running after {timeout:g} s: stopped"
        err.seek(0)
        text = err.read(65536).decode("utf-8", "replace").strip()
    if status < 0:
        status = 128 - status  # killed by a signal: as a shell reports it
    last = text.splitlines()[-1:]
    return status, f"exit {status}" + (f": {last[0]}" if last else "")
