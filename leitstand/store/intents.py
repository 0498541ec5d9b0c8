"""The intent log of one domain, `.leitstand/<stem>.idem`: what a writer is about to append.

Every line is written while the domain's data-file lock is held, so all processes see one
sequence. Before a group of requests is appended to the data file, a *group line* names the data
file (inode) and the byte range the group will fill, and for each request with an
`Idempotency-Key` its key, fingerprint, range and sha256. After the group is written (and
fsynced), a *resolution line* says whether it was committed or voided. Compaction writes plain
*record lines* (a committed key and its answer).

Whoever takes the lock and finds a group line without a resolution line knows its writer died in
the middle: the caller checks where the data file ends and resolves it, exactly once, under the
lock — cut back to the group's start (all of a group or nothing) or, if the whole group landed,
committed. So a key counts only when its bytes are in the file, and a key whose data never landed
is void: a retry writes it exactly once.

Group lines are fsynced before the data is written only when the group has keys (a key's record
must be durable before its data can be); for unkeyed groups they serve process crashes.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import orjson

from .files import (
    FILE_MODE,
    OPEN_FLAGS,
    cut_partial_tail,
    identity,
    names,
    partial_tail_start,
    replace_file,
    write_all,
)


@dataclass(slots=True)
class Record:
    """A stored key and the answer a retry with the same key gets."""

    fingerprint: str
    accepted: int
    at: float


@dataclass(frozen=True, slots=True)
class Intent:
    """A keyed request of a group: where its bytes go and what they hash to."""

    key: str
    fingerprint: str
    start: int
    length: int
    digest: str
    accepted: int


@dataclass(slots=True)
class Group:
    """The range of the data file (by inode) a writer is about to fill."""

    ino: int
    start: int
    end: int
    at: float
    intents: list[Intent] = field(default_factory=list)

    def to_line(self) -> bytes:
        return orjson.dumps(
            {"g": [self.ino, self.start, self.end], "t": self.at,
             "i": [[i.key, i.fingerprint, i.start, i.length, i.digest, i.accepted]
                   for i in self.intents]},
            option=orjson.OPT_APPEND_NEWLINE,
        )


_COMMITTED = b'{"c":1}\n'
_VOIDED = b'{"c":0}\n'


class IntentLog:
    """One domain's intent log and the live idempotency records it yields (bounded in memory)."""

    def __init__(self, name: str, dir_fd: int, *, window: float, max_keys: int) -> None:
        self._name = name
        self._dir_fd = dir_fd
        self._window = window
        self._max_keys = max_keys
        self._records: dict[str, Record] = {}
        self._fd: int | None = None
        self._offset = 0  # how far the log has been read (always at a line boundary)
        self._lines = 0
        self._open: Group | None = None  # a group line not (yet) followed by its resolution
        self._ident = (0, 0)  # (device, inode) of `_fd`
        self._clean = False  # known to end at `_offset` (no torn line after it)

    # -- reading -------------------------------------------------------------------------------
    def catch_up(self, *, tail_only: bool = False) -> Group | None:
        """Read what other processes appended (lock held). Returns the group left open by a
        writer that died, if any. `tail_only`: skip the history, look at the last line only."""
        if self._fd is not None and not names(self._name, self._dir_fd, self._ident):
            self._forget()  # another process compacted the log: read the new one from the start
        fd = self._fd
        if fd is None:
            try:
                fd = self._set_fd(os.open(self._name, OPEN_FLAGS, dir_fd=self._dir_fd))
            except FileNotFoundError:
                return None
            if tail_only:
                end = partial_tail_start(fd, os.fstat(fd).st_size)
                self._offset = partial_tail_start(fd, end - 1) if end else 0
        size = os.fstat(fd).st_size
        if size > self._offset:
            data = os.pread(fd, size - self._offset, self._offset)
            end = data.rfind(b"\n") + 1
            for raw in data[:end].splitlines():
                self._load_line(raw)
            self._offset += end
            self._evict()
        self._clean = size == self._offset  # else a dead writer left a torn line at the end
        return self._open

    def _set_fd(self, fd: int) -> int:
        self._fd = fd
        self._ident = identity(fd)
        return fd

    def _load_line(self, raw: bytes) -> None:
        try:
            item = orjson.loads(raw)
            if "g" in item:
                ino, start, end = item["g"]
                self._open = Group(ino, start, end, item["t"],
                                   [Intent(*fields) for fields in item["i"]])
            elif "c" in item:
                if self._open is not None and item["c"] == 1:
                    self._commit_records(self._open)
                self._open = None
            else:
                self._put(item["k"], Record(item["f"], item["a"], item["t"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # a line this version does not understand carries nothing it needs
        self._lines += 1

    def lookup(self, key: str) -> Record | None:
        """The committed record for `key` within the window, or None."""
        record = self._records.get(key)
        if record is not None and record.at < time.time() - self._window:
            del self._records[key]
            return None
        return record

    # -- writing (lock held) -------------------------------------------------------------------
    def begin(self, group: Group, *, fsync: bool) -> None:
        """Log `group` before its data is written (durably if it carries keys)."""
        self._append(group.to_line(), fsync=fsync and bool(group.intents))
        self._open = group

    def resolve(self, group: Group, *, committed: bool, fsync: bool) -> None:
        """Record the outcome of `group` (ours, or one a dead writer left open). If this fails,
        the group stays open and the next lock holder resolves it again."""
        self._open = group
        self._append(_COMMITTED if committed else _VOIDED, fsync=fsync)
        if committed:
            self._commit_records(group)
        self._open = None

    def _commit_records(self, group: Group) -> None:
        for intent in group.intents:
            self._put(intent.key, Record(intent.fingerprint, intent.accepted, group.at))
        self._evict()

    def _put(self, key: str, record: Record) -> None:
        self._records.pop(key, None)
        self._records[key] = record

    def _append(self, payload: bytes, *, fsync: bool) -> None:
        created = False
        fd = self._fd
        if fd is None:
            fd = self._set_fd(os.open(self._name, OPEN_FLAGS | os.O_CREAT, FILE_MODE,
                                      dir_fd=self._dir_fd))
            created = True
            self._clean = False
        if self._clean:
            size = self._offset
        else:  # a writer that died mid-line left a torn log line: cut it (nobody read past it)
            size, _ = cut_partial_tail(fd, os.fstat(fd).st_size)
        self._clean = False
        try:
            write_all(fd, payload)
            if fsync:
                os.fdatasync(fd)
                if created:
                    os.fsync(self._dir_fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
        self._offset = size + len(payload)
        self._clean = True
        self._lines += payload.count(b"\n")
        self._evict()

    def compact_if_large(self, *, fsync: bool) -> None:
        """Rewrite the log with only the live records once it is mostly dead weight."""
        if self._fd is None or self._open is not None:
            return
        if self._lines < 2 * len(self._records) + 1024:
            return
        self._evict()
        payload = b"".join(
            orjson.dumps({"k": key, "f": r.fingerprint, "a": r.accepted, "t": r.at},
                         option=orjson.OPT_APPEND_NEWLINE)
            for key, r in self._records.items()
        )
        replace_file(self._name, self._dir_fd, payload, fsync=fsync)
        os.close(self._fd)
        self._set_fd(os.open(self._name, OPEN_FLAGS, dir_fd=self._dir_fd))
        self._offset, self._lines = len(payload), len(self._records)
        self._clean = True

    def _evict(self) -> None:
        horizon = time.time() - self._window
        while self._records:
            key, record = next(iter(self._records.items()))
            if record.at >= horizon and len(self._records) <= self._max_keys:
                break
            del self._records[key]

    def _forget(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._offset, self._lines, self._open = None, 0, 0, None
        self._clean = False
        self._records.clear()

    def close(self) -> None:
        self._forget()
