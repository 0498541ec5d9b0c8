"""Idempotency records for one domain, persisted next to the data.

Before a keyed request's lines are written, an *intent* is appended (and fsynced) to
`.leitstand/<stem>.idem`: the key, the request's fingerprint, and where its bytes will land in the
data file with their sha256. A record counts only once the data file holds exactly those bytes
there, so a crash between the intent and the data leaves a void record, never a lost or doubled
event. The log is only read or written while the domain's data-file lock is held, which makes it
consistent across worker processes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import orjson

from .files import FILE_MODE, OPEN_FLAGS, cut_partial_tail, same_file, write_all


@dataclass(slots=True)
class Record:
    fingerprint: str
    start: int
    length: int
    digest: str
    accepted: int
    at: float
    verified: bool = False

    def to_line(self, key: str) -> bytes:
        return orjson.dumps(
            {"k": key, "f": self.fingerprint, "s": self.start, "n": self.length,
             "h": self.digest, "a": self.accepted, "t": self.at},
            option=orjson.OPT_APPEND_NEWLINE,
        )


class IdempotencyLog:
    def __init__(self, name: str, dir_fd: int, *, window: float, max_keys: int) -> None:
        self._name = name
        self._dir_fd = dir_fd
        self._window = window
        self._max_keys = max_keys
        self._records: dict[str, Record] = {}
        self._fd: int | None = None
        self._offset = 0
        self._lines = 0

    # -- reading -------------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Load records other processes appended since the last call (lock held)."""
        if self._fd is not None and not same_file(self._fd, self._name, self._dir_fd):
            os.close(self._fd)
            self._fd, self._offset, self._lines = None, 0, 0
            self._records.clear()
        if self._fd is None:
            try:
                self._fd = os.open(self._name, OPEN_FLAGS, dir_fd=self._dir_fd)
            except FileNotFoundError:
                return
        size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return
        data = os.pread(self._fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            self._load_line(raw)
        self._offset += end
        self._evict()

    def _load_line(self, raw: bytes) -> None:
        try:
            item = orjson.loads(raw)
            record = Record(item["f"], item["s"], item["n"], item["h"], item["a"], item["t"])
            key = item["k"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        self._lines += 1
        self._records.pop(key, None)
        self._records[key] = record

    def lookup(self, key: str, data_fd: int, data_size: int) -> Record | None:
        """The committed record for `key`, or None. Void records (data never landed) are dropped."""
        record = self._records.get(key)
        if record is None:
            return None
        if record.at < time.time() - self._window:
            del self._records[key]
            return None
        if not record.verified:
            if not _landed(record, data_fd, data_size):
                del self._records[key]
                return None
            record.verified = True
        return record

    # -- writing -------------------------------------------------------------------------------
    def record_intents(self, intents: list[tuple[str, Record]], *, fsync: bool) -> None:
        """Append the intents durably, before the data they describe is written."""
        created = False
        if self._fd is None:
            self._fd = os.open(
                self._name, OPEN_FLAGS | os.O_CREAT, FILE_MODE, dir_fd=self._dir_fd
            )
            created = True
        size = os.fstat(self._fd).st_size
        size, _ = cut_partial_tail(self._fd, size)
        if size < self._offset:
            self._offset = size
        payload = b"".join(record.to_line(key) for key, record in intents)
        write_all(self._fd, payload)
        if fsync:
            os.fdatasync(self._fd)
            if created:
                os.fsync(self._dir_fd)
        self._offset = size + len(payload)
        for key, record in intents:
            self._records.pop(key, None)
            self._records[key] = record
            self._lines += 1
        self._evict()

    def compact_if_large(self, data_fd: int, data_size: int, *, fsync: bool) -> None:
        """Rewrite the log with only live, committed records once it is mostly dead weight."""
        if self._fd is None or self._lines < 2 * len(self._records) + 1024:
            return
        live = [
            (key, record)
            for key, record in list(self._records.items())
            if self.lookup(key, data_fd, data_size) is not None
        ]
        tmp = self._name + ".tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
            FILE_MODE, dir_fd=self._dir_fd,
        )
        try:
            payload = b"".join(record.to_line(key) for key, record in live)
            write_all(fd, payload)
            if fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        if fsync:
            os.fsync(self._dir_fd)
        os.close(self._fd)
        self._fd = os.open(self._name, OPEN_FLAGS, dir_fd=self._dir_fd)
        self._offset, self._lines = len(payload), len(live)

    def _evict(self) -> None:
        horizon = time.time() - self._window
        while self._records:
            key, record = next(iter(self._records.items()))
            if record.at >= horizon and len(self._records) <= self._max_keys:
                break
            del self._records[key]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _landed(record: Record, data_fd: int, data_size: int) -> bool:
    if record.start + record.length > data_size:
        return False
    written = os.pread(data_fd, record.length, record.start)
    return hashlib.sha256(written).hexdigest() == record.digest
