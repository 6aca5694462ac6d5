"""One writer per directory (a run directory, a table's sweep files, a table's results), also on shared filesystems.

The lock is the file ``<dir>/.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS, Lustre
and GPFS, some of which do not honour ``flock``). It holds its holder's host, pid and start time; a thread of the
holder touches it every :data:`HEARTBEAT_S` seconds. A lock is *stale*, and the next process takes it over, when
its heartbeat is older than :data:`STALE_AFTER_S` (a holder killed with SIGKILL or lost with its node), or at once
when its holder is a process of this host that no longer exists. A holder whose lock was taken over (its heartbeat
stopped that long: a suspended job) notices at its next heartbeat and writes nothing more (:meth:`DirLock.check`).
Problems of the filesystem itself (not writable, full) are ``OSError``s, for the caller to name its fix.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvlars.errors import UserError

log = logging.getLogger("tvlars")

LOCK_NAME = ".lock"
HEARTBEAT_S = 30.0  # how often a holder touches its lock
STALE_AFTER_S = 300.0  # a lock whose heartbeat is older is taken over (the hosts' clocks agree, as NTP keeps them)


class Locked(UserError):
    """Another process holds the directory (or took it over from this one)."""


@dataclass(frozen=True)
class Holder:
    """What a lock file says about its holder, and how old its heartbeat is."""

    raw: bytes
    host: str
    pid: int | None
    started: str
    token: str
    age_s: float

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        """The holder of the lock at ``path``, ``None`` if there is no lock (an unparsable one is a holder of
        unknown host and pid, stale by its age alone)."""
        try:
            raw, mtime = path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info: Any = json.loads(raw)
        except ValueError:
            info = None
        info = info if isinstance(info, dict) else {}
        pid = info.get("pid")
        return cls(raw, str(info.get("host", "an unknown host")), pid if isinstance(pid, int) else None,
                   str(info.get("started", "?")), str(info.get("token", "")), time.time() - mtime)

    @property
    def stale(self) -> bool:
        if self.age_s > STALE_AFTER_S:
            return True
        if self.host != socket.gethostname() or self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def __str__(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "a process"
        return f"{pid} on {self.host} (since {self.started}, heartbeat {self.age_s:.0f} s ago)"


class DirLock:
    """The lock of one directory, held by this process between :meth:`acquire` and :meth:`release` (or as a
    context manager). ``what`` names the directory in messages (``run directory``, ``results directory``...)."""

    def __init__(self, directory: str | Path, what: str = "directory") -> None:
        self.dir, self.what = Path(directory), what
        self.path = self.dir / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.lost_to: str | None = None  # who took the lock over (set by the heartbeat)
        self._created_dir = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> DirLock:
        """Take the lock, or raise :class:`Locked` naming the directory and its holder; a stale lock is taken over
        (with a warning). Creates the directory if needed."""
        self._created_dir = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed by this process, or by another at the same time
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = Holder.read(self.path)
                if holder is not None and not holder.stale:
                    self._remove_created_dir()
                    raise Locked(f"{self.what} {self.dir} is in use by {holder}; wait for it to finish, or delete "
                                 f"{self.path} if that process is gone (a lock goes stale {STALE_AFTER_S:.0f} s "
                                 "after its last heartbeat)") from None
                if holder is not None:
                    self._break(holder)
                continue
            except OSError:
                self._remove_created_dir()
                raise
            info = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(info) + "\n")
            except OSError:  # a full disk: no empty lock may stay behind to refuse everyone
                self.path.unlink(missing_ok=True)
                self._remove_created_dir()
                raise
            self._thread = threading.Thread(target=self._beat, name=f"lock {self.dir}", daemon=True)
            self._thread.start()
            return self
        raise Locked(f"{self.what} {self.dir}: another process is taking over its stale lock; try again")

    def _break(self, holder: Holder) -> None:
        """Remove the stale lock of ``holder``: renamed first, so that of several processes breaking it at once one
        succeeds, and put back if a fresh lock took its place in between."""
        log.warning("warning: taking over the stale lock of %s %s held by %s", self.what, self.dir, holder)
        grave = self.path.with_name(f"{LOCK_NAME}.stale-{self.token}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        if grave.read_bytes() != holder.raw:
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        grave.unlink()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            holder = Holder.read(self.path)
            if holder is None or holder.token != self.token:
                self.lost_to = str(holder) if holder is not None else "nobody (the lock file was deleted)"
                log.error("error: the lock of %s %s was taken over by %s; this process writes nothing more there",
                          self.what, self.dir, self.lost_to)
                return
            try:
                os.utime(self.path)
            except OSError as exc:  # a full or failing filesystem: the next beat tries again
                log.warning("warning: could not refresh the lock %s (%s)", self.path, exc.strerror)

    def check(self) -> None:
        """Raise :class:`Locked` if another process took this lock over (write nothing more then)."""
        if self.lost_to is not None:
            raise Locked(f"the lock of {self.what} {self.dir} was taken over by {self.lost_to} while this process "
                         "held it (its heartbeat had stopped: a suspended job?); this process writes nothing more "
                         "there")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still this process's; a directory that
        :meth:`acquire` created and nothing else was written to goes too."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = Holder.read(self.path)
        if holder is not None and holder.token == self.token:
            self.path.unlink(missing_ok=True)
        self._remove_created_dir()

    def _remove_created_dir(self) -> None:
        if self._created_dir:
            try:
                self.dir.rmdir()
            except OSError:  # not empty: records were written
                pass

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
