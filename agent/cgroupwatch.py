"""A cgroup index that learns new cgroups the moment they are created (inotify on cgroupfs).

The plain `CgroupIndex` resolves an id by walking the tree when the id is first read from the
probe, once per interval: a cgroup created and removed between two reads (a short job, a crash
loop, a churn of exec probes) would never be seen alive, and its waits would be attribution
misses. Here a background thread watches every directory of the hierarchy for IN_CREATE, stats
each new directory at once, and keeps what it learned for `retain` seconds after learning it, so
those ids resolve to the path they had. It also sees directories removed (IN_DELETE), so whether
an idle container's cgroup still exists is known without a stat() per container per interval.
Where inotify is unavailable (or its watch limit is reached) it degrades to the walk-only
behaviour and says so once.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import sys
import threading
import time

from runqscale.probes.cgroupfs import CgroupIndex

IN_CREATE, IN_DELETE, IN_IGNORED, IN_ISDIR, IN_Q_OVERFLOW = \
    0x100, 0x200, 0x8000, 0x40000000, 0x4000
IN_ONLYDIR, IN_NONBLOCK, IN_CLOEXEC = 0x01000000, 0o4000, 0o2000000
_EVENT = struct.Struct("iIII")


class WatchedCgroupIndex(CgroupIndex):
    def __init__(self, root: str, retain: float = 10.0) -> None:
        self.retain = retain
        self._learned: dict[int, tuple[str, float]] = {}  # id -> (rel, learned at)
        # rel -> when its directory was removed (IN_DELETE on the parent): exists() answers from
        # here, so an idle container costs no stat() per interval
        self._removed: dict[str, float] = {}
        self._overflowed = False  # events were lost: exists() falls back to stat() for good
        self._lock = threading.Lock()
        self._wd: dict[int, str] = {}  # watch descriptor -> rel
        self._watched: set[str] = set()
        self.learned_total = 0
        self._warned = False
        self._stop = False
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        super().__init__(root)
        if self._fd < 0:
            self._warn(f"inotify unavailable ({os.strerror(ctypes.get_errno())})")
            return
        self._watch_tree("/")
        self._thread = threading.Thread(target=self._run, name="cgroup-watch", daemon=True)
        self._thread.start()

    # -- resolution -----------------------------------------------------------------------------

    def path_of(self, cgroup_id: int) -> str | None:
        rel = self._by_id.get(cgroup_id)
        if rel is not None:
            return rel
        with self._lock:
            hit = self._learned.get(cgroup_id)
        if hit is not None:
            return hit[0]
        return super().path_of(cgroup_id)

    def forget(self, cgroup_id: int) -> None:
        super().forget(cgroup_id)
        with self._lock:
            self._learned.pop(cgroup_id, None)

    def exists(self, rel: str) -> bool:
        if self._fd < 0 or self._overflowed or rel not in self._watched:
            return super().exists(rel)  # not watched (or events lost): ask the filesystem
        return rel not in self._removed

    def walk(self) -> None:
        super().walk()
        if self._fd >= 0:
            for rel in set(self._by_id.values()) - self._watched:
                self._add_watch(rel)
        self._prune()

    def _prune(self) -> None:
        edge = time.monotonic() - self.retain
        with self._lock:
            old = [k for k, (_, t) in self._learned.items() if t < edge]
            for k in old:
                del self._learned[k]
            for rel in [r for r, t in self._removed.items() if t < edge]:
                del self._removed[rel]

    # -- inotify --------------------------------------------------------------------------------

    def _add_watch(self, rel: str) -> bool:
        if self._fd < 0 or rel in self._watched:
            return True
        wd = self._libc.inotify_add_watch(self._fd, self.abspath(rel).encode(),
                                          IN_CREATE | IN_DELETE | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                self._warn("inotify watch limit reached (fs.inotify.max_user_watches); "
                           "short-lived cgroups may go unresolved")
            return False
        with self._lock:
            self._wd[wd] = rel
            self._watched.add(rel)
        return True

    def _watch_tree(self, rel: str) -> None:
        """Watch rel and everything below it, learning each directory (new ones race with us)."""
        stack = [rel]
        now = time.monotonic()
        while stack:
            r = stack.pop()
            if not self._add_watch(r):
                continue
            try:
                with os.scandir(self.abspath(r)) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            child = self.shared(r.rstrip("/") + "/" + e.name)  # the walk's copy
                            self._learn(child, now, e.inode())
                            stack.append(child)
            except OSError:
                continue

    def _learn(self, rel: str, now: float, ino: int | None = None) -> None:
        if ino is None:
            try:
                ino = os.stat(self.abspath(rel)).st_ino
            except OSError:
                return
        with self._lock:
            if ino not in self._learned:
                self.learned_total += 1
            self._learned[ino] = (rel, now)
            self._removed.pop(rel, None)  # the same name made again

    def _run(self) -> None:
        last_prune = time.monotonic()
        poller = select.poll()  # not select(): the agent's descriptors may pass 1024
        poller.register(self._fd, select.POLLIN)
        while not self._stop:
            try:
                ready = poller.poll(1000)
            except (OSError, ValueError):
                return
            if ready:
                try:
                    buf = os.read(self._fd, 64 * 1024)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                self._handle(buf)
            if time.monotonic() - last_prune > self.retain / 2:
                self._prune()
                last_prune = time.monotonic()

    def _handle(self, buf: bytes) -> None:
        off, now = 0, time.monotonic()
        while off + _EVENT.size <= len(buf):
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, off)
            name = buf[off + _EVENT.size: off + _EVENT.size + length].split(b"\0", 1)[0]
            off += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self._last_walk = -1e9  # lost events: the next miss walks at once
                self._overflowed = True
                continue
            if mask & IN_IGNORED:  # the watched directory itself is gone
                with self._lock:
                    rel = self._wd.pop(wd, None)
                    if rel is not None:
                        self._watched.discard(rel)
                        self._removed[rel] = now
                continue
            if mask & IN_DELETE and mask & IN_ISDIR:
                with self._lock:
                    parent = self._wd.get(wd)
                    if parent is not None:
                        self._removed[parent.rstrip("/") + "/" + os.fsdecode(name)] = now
                continue
            if mask & IN_CREATE and mask & IN_ISDIR:
                with self._lock:
                    parent = self._wd.get(wd)
                if parent is None:
                    continue
                rel = self.shared(parent.rstrip("/") + "/" + os.fsdecode(name))
                self._learn(rel, now)
                self._watch_tree(rel)

    def close(self) -> None:
        self._stop = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _warn(self, msg: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"runqscale agent: {msg}", file=sys.stderr, flush=True)
