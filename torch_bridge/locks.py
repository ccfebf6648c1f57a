"""One writer at a time: locks on an output folder, and per chunk of an activation store.

The mutual exclusion itself is ``filelock.FileLock`` (``flock`` on the lock file; the kernel
drops it when the holding process dies, and filelock falls back to a pid-stamped soft lock,
which it breaks when the recorded process is gone, on filesystems without ``flock``). Next to
the lock file each holder records who it is (``<lock>.owner.json``: host, pid, command,
start time) so that

* a run that finds the lock held can say by whom and since when, instead of only "busy";
* a record left behind by a run that was killed (its pid no longer running on this host, or
  its lock released while the record stayed) is *detected* when the next run takes the lock,
  reported, and replaced: the stale lock is cleared explicitly, never silently.

Plain Python (no numpy, no torch), so both ``torch_bridge`` and ``jaxprobe`` use it.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

__all__ = ["FolderBusyError", "LockFolderError", "folder_lock", "pid_alive", "try_lock"]

LOCK_NAME = ".jaxprobe.lock"


class FolderBusyError(UserError, RuntimeError):
    """Another live run holds the lock (``path``); ``owner`` is its record (may be empty)."""

    def __init__(self, message: str, path: Path, owner: dict):
        super().__init__(message)
        self.path, self.owner = path, owner


class LockFolderError(UserError, OSError):
    """The folder to lock cannot be created, or its lock file cannot be written."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a zombie counts as dead)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a killed child not yet reaped by its parent is a zombie: as good as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner.json")


def _read_owner(lock_path: Path) -> dict:
    try:
        with open(_owner_path(lock_path)) as f:
            got = json.load(f)
        return got if isinstance(got, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(owner: dict) -> str:
    if not owner:
        return "another process (it left no owner record)"
    what = owner.get("purpose") or "a run"
    return (f"{what} (pid {owner.get('pid')} on host {owner.get('host')}, since {owner.get('since')}; "
            f"command: {owner.get('command')})")


def _is_stale(owner: dict) -> bool | None:
    """True: the recorded process is dead (this host); None: on another host, cannot tell."""
    if owner.get("host") != socket.gethostname():
        return None
    return not pid_alive(owner.get("pid", -1))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_owner(lock_path: Path, purpose: str) -> None:
    rec = {"host": socket.gethostname(), "pid": os.getpid(), "purpose": purpose,
           "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join(sys.argv)[:500]}
    dst = _owner_path(lock_path)
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, dst)


@contextmanager
def try_lock(lock_path: str | os.PathLike, *, purpose: str, wait: float = 0.0,
             log: Callable[[str], None] | None = None, remove: bool = False) -> Iterator[bool]:
    """Hold the lock ``lock_path`` for the ``with`` block; yields False (holding nothing)
    when another live process holds it after ``wait`` seconds (negative: wait forever). A
    record left by a dead holder is reported through ``log`` (default: stderr) and replaced.
    ``remove``: delete the lock file on release (safe: filelock retries when the file it
    locked was unlinked meanwhile)."""
    from filelock import FileLock, Timeout

    lock_path = Path(lock_path)
    lock = FileLock(str(lock_path), timeout=wait, thread_local=False)
    try:
        lock.acquire()
        got = True
    except Timeout:
        got = False
    if not got:
        yield False
        return
    try:
        old = _read_owner(lock_path)
        if old:
            # We hold the lock, so whoever wrote this record no longer does: it was killed.
            stale = _is_stale(old)
            why = ("its process is no longer running" if stale else
                   "it released the lock without clearing its record" if stale is False else
                   "its lock was released; it ran on another host")
            (log or _stderr)(f"cleared a stale lock on {lock_path.parent} left by {_describe(old)}: {why}.")
        _write_owner(lock_path, purpose)
        yield True
    finally:
        try:
            _owner_path(lock_path).unlink(missing_ok=True)
            if remove:
                lock_path.unlink(missing_ok=True)
        finally:
            lock.release()


@contextmanager
def folder_lock(folder: str | os.PathLike, *, purpose: str, wait: float = 0.0,
                log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold the one-writer lock of ``folder`` (created if needed) for the ``with`` block.

    Raises FolderBusyError naming the holder (pid, host, command, start) when a live run
    holds it after ``wait`` seconds (0: refuse at once)."""
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_path.touch()
    except OSError as exc:
        raise LockFolderError(f"Cannot take the one-writer lock of {folder}: {exc.strerror or exc}. "
                              "Choose an output folder you can create and write to.") from None
    with try_lock(lock_path, purpose=purpose, wait=wait, log=log) as got:
        if not got:
            owner = _read_owner(lock_path)
            note = ""
            if owner and _is_stale(owner):
                note = (f" Its recorded process {owner.get('pid')} is gone, but the lock is still held, "
                        "most likely by a child process it started; stop that process.")
            raise FolderBusyError(
                f"{folder} is in use by {_describe(owner)}.{note} Only one run may write to a folder at a time: "
                "wait for that run to finish, or write to another output folder.", folder, owner)
        yield folder
