"""One writer per folder: a second run is refused (or waits), a killed run's lock is cleared."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torch_bridge.locks import FolderBusyError, folder_lock, pid_alive

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from torch_bridge.locks import folder_lock
with folder_lock(sys.argv[1], purpose="jaxprobe sweep"):
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
time.sleep(60)
"""


def _holder(folder, hold=60.0):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(hold)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    if p.stdout.readline().strip() != "ready":
        p.kill()
        raise AssertionError(p.communicate()[1])
    return p


def _stop(p):
    p.kill()
    p.communicate()


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    p = _holder(tmp_path / "out")
    try:
        t0 = time.perf_counter()
        with pytest.raises(FolderBusyError) as err:
            with folder_lock(tmp_path / "out", purpose="test"):
                pass
        assert time.perf_counter() - t0 < 5  # refused at once, not after a wait
        msg = str(err.value)
        assert f"pid {p.pid}" in msg and "jaxprobe sweep" in msg and "another output folder" in msg
        with pytest.raises(FolderBusyError):  # a bounded wait that runs out is refused too
            with folder_lock(tmp_path / "out", purpose="test", wait=0.5):
                pass
    finally:
        _stop(p)


def test_second_writer_waits_when_asked(tmp_path):
    p = _holder(tmp_path / "out", hold=1.0)
    try:
        t0 = time.perf_counter()
        with folder_lock(tmp_path / "out", purpose="test", wait=30):
            waited = time.perf_counter() - t0
        assert 0.3 < waited < 30
        assert p.stdout.readline().strip() == "released"
    finally:
        _stop(p)


def test_stale_lock_of_a_killed_run_is_detected_and_cleared(tmp_path):
    p = _holder(tmp_path / "out")
    p.send_signal(signal.SIGKILL)
    p.communicate()
    assert not pid_alive(p.pid)
    owner = tmp_path / "out" / ".jaxprobe.lock.owner.json"
    assert owner.is_file()  # the killed run could not clean up
    said = []
    with folder_lock(tmp_path / "out", purpose="test", log=said.append):
        assert f'"pid": {os.getpid()}' in owner.read_text()
    assert len(said) == 1 and "stale lock" in said[0] and f"pid {p.pid}" in said[0] and "no longer running" in said[0]
    assert not owner.exists()
    said.clear()
    with folder_lock(tmp_path / "out", purpose="test", log=said.append):  # a clean release leaves nothing stale
        pass
    assert said == []


def test_pid_alive():
    assert pid_alive(os.getpid())
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not pid_alive(p.pid) and not pid_alive(-1)


def test_concurrent_sweep_and_hear_runs_are_refused(tmp_path):
    """A second `jaxprobe sweep` on a folder in use (a real subprocess through the CLI) exits 2
    with one line naming the holder, before loading any config or model."""
    p = _holder(tmp_path / "out")
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "jaxprobe.cli", "sweep", "--config", "demo", "--out",
                            str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2, r.stderr
        assert "is in use by jaxprobe sweep" in r.stderr and f"pid {p.pid}" in r.stderr
        assert "Traceback" not in r.stderr and time.perf_counter() - t0 < 60
        from jaxprobe.studies import hear

        with pytest.raises(FolderBusyError):
            hear.run("demo", tmp_path / "out")
    finally:
        _stop(p)
