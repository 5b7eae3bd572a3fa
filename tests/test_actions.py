"""A group's service actions (owsync.service.actions) with real init scripts:
executables in a directory of the test's own that record each invocation
(service, action, their PID) in a file, as /etc/init.d/NAME would run."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from owsync.service.actions import TIMED_OUT, run_actions
from owsync.service.config import Group

CHANGED = ["dropbear_rsa_host_key", "dropbear_ed25519_host_key"]


def script(init: Path, name: str, body: str = "") -> None:
    """An init script that records `NAME ACTION PID` then runs ``body``."""
    path = init / name
    path.write_text(f'#!/bin/sh\necho "{name} $1 $$" >> "{init}/ran"\n{body}\n')
    path.chmod(0o755)


def ran(init: Path) -> list[tuple[str, str, int]]:
    log = init / "ran"
    if not log.exists():
        return []
    return [(n, a, int(p)) for n, a, p in (ln.split() for ln in log.read_text().splitlines())]


@pytest.fixture
def init(tmp_path):
    d = tmp_path / "init.d"
    d.mkdir()
    for name in ("dropbear", "uhttpd", "nginx", "cron"):
        script(d, name)
    return d


def group(reload=(), restart=()) -> Group:
    return Group("keys", "/etc/dropbear", ("*",), (), True, tuple(reload), tuple(restart))


def test_each_service_runs_once_per_batch_reloads_then_restarts(init, caplog):
    caplog.set_level(logging.INFO, "owsync")
    g = group(reload=("uhttpd", "nginx", "uhttpd", "cron"), restart=("dropbear", "cron"))
    done = run_actions(g, CHANGED, str(init))
    # a duplicate runs once; a service to restart is not reloaded too
    expected = [("uhttpd", "reload"), ("nginx", "reload"), ("dropbear", "restart"),
                ("cron", "restart")]  # fmt: skip
    assert done == [(s, a, 0) for s, a in expected]
    runs = ran(init)
    assert [(s, a) for s, a, _ in runs] == expected
    pids = [p for _, _, p in runs]
    assert len(set(pids)) == 4 and os.getpid() not in pids  # a process each
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"group keys: {init}/dropbear restart: exit 0 (2 file(s) arrived)" in infos
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the next batch runs them again, once each
    assert len(run_actions(g, ["x"], str(init))) == 4 and len(ran(init)) == 8


def test_nothing_runs_without_changes_or_services(init):
    assert run_actions(group(restart=("dropbear",)), [], str(init)) == []
    assert run_actions(group(), CHANGED, str(init)) == []
    assert ran(init) == []


def test_a_failure_is_an_error_line_and_the_others_still_run(init, caplog):
    script(init, "uhttpd", 'echo "uhttpd: cannot load certificate" >&2; exit 3')
    (init / "cron").unlink()
    caplog.set_level(logging.INFO, "owsync")
    done = run_actions(group(reload=("uhttpd", "cron"), restart=("dropbear",)), CHANGED,
                       str(init))  # fmt: skip
    assert done == [("uhttpd", "reload", 3), ("dropbear", "restart", 0)]
    assert [(s, a) for s, a, _ in ran(init)] == [("uhttpd", "reload"), ("dropbear", "restart")]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"group keys: {init}/uhttpd reload failed: exit 3: uhttpd: cannot load certificate"
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"group keys: no init script {init}/cron: cron not reloaded after 2 file(s) arrived"
    ]


def test_the_init_directory_comes_from_the_environment(init, monkeypatch):
    monkeypatch.setenv("OWSYNC_INIT_DIR", str(init))
    assert run_actions(group(restart=("dropbear",)), CHANGED) == [("dropbear", "restart", 0)]
    assert [(s, a) for s, a, _ in ran(init)] == [("dropbear", "restart")]


def test_a_hung_script_is_stopped_at_the_timeout(init, caplog):
    script(init, "dropbear", "exec sleep 60")
    caplog.set_level(logging.INFO, "owsync")
    start = time.monotonic()
    done = run_actions(group(restart=("dropbear", "uhttpd")), CHANGED, str(init), timeout=0.5)
    assert time.monotonic() - start < 10
    assert done == [("dropbear", "restart", TIMED_OUT), ("uhttpd", "restart", 0)]
    (pid,) = [p for s, _, p in ran(init) if s == "dropbear"]
    with pytest.raises(ProcessLookupError):  # stopped and reaped
        os.kill(pid, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"group keys: {init}/dropbear restart failed: still running after 0.5 s: stopped"
    ]


def test_a_service_the_script_starts_is_neither_waited_for_nor_stopped(init, tmp_path):
    """An old-style init script starts its daemon itself, which keeps the
    script's stderr: the action ends with the script, the daemon lives on."""
    pidfile = tmp_path / "daemon.pid"
    script(init, "cron", f"sleep 60 & echo $! > {pidfile}")
    start = time.monotonic()
    done = run_actions(group(restart=("cron",)), CHANGED, str(init), timeout=20)
    assert done == [("cron", "restart", 0)]
    assert time.monotonic() - start < 10
    daemon = int(pidfile.read_text())
    try:
        os.kill(daemon, 0)  # still running
    finally:
        os.kill(daemon, 9)  # the test's own (its script started it), by PID
