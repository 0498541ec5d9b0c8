"""Which domain a shortened file name belongs to.

A domain longer than `PLAIN_STEM_MAX` characters is stored under its first characters plus 8 hex
digits of its SHA-256 (`domains.file_stem`), as the spec says. 32 bits can collide: two long
domains with the same prefix and the same 8 hex digits would share every file. So the first
domain to store under such a name records itself in `.leitstand/<stem>.dom`, and every later
write (and read) under that name by another domain is refused with 409 (404 for reads) instead of
being mixed into the first domain's file. The record is made while the data file's flock is held
(both domains lock the same file, so two of them never race), written to a temporary file,
fsynced and linked into place, so it is either whole or absent.

The NATS sink checks the same record before it writes (`leitstand/nats/collisions.py`), and an
ingest node that sees the sink's directory refuses a taken name up front (`refuse_if_taken`).
"""

from __future__ import annotations

import os

from ..domains import PLAIN_STEM_MAX, file_stem
from ..errors import DomainCollision
from .datafile import HELPER_DIR
from .files import replace_file

OWNER_SUFFIX = ".dom"
_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW


def is_shortened(domain: str) -> bool:
    return len(domain) > PLAIN_STEM_MAX


def read_owner(helper_fd: int, stem: str) -> str | None:
    """The domain recorded for `stem`, or None (no record, or none that is whole)."""
    try:
        fd = os.open(stem + OWNER_SUFFIX, _READ, dir_fd=helper_fd)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, 1024)
    finally:
        os.close(fd)
    if not data.endswith(b"\n"):
        return None
    return data[:-1].decode("ascii", "replace")


def claim(helper_fd: int, stem: str, domain: str, *, fsync: bool) -> None:
    """(Data file lock held.) Record `domain` as the owner of `stem` unless one is recorded;
    raise `DomainCollision` if another domain owns it."""
    owner = read_owner(helper_fd, stem)
    if owner is None:
        # all at once (a record that is not whole reads as none, and is replaced)
        replace_file(stem + OWNER_SUFFIX, helper_fd, domain.encode("ascii") + b"\n",
                     fsync=fsync)
        owner = read_owner(helper_fd, stem)
    if owner != domain:
        raise collision(domain, stem, owner)


def collision(domain: str, stem: str, owner: str | None) -> DomainCollision:
    return DomainCollision(
        f"domain {domain!r} cannot be stored: its shortened file name {stem}.jsonl already "
        f"belongs to the domain {owner!r} (the names share a prefix and the same 8-digit "
        "hash); use a shorter or different domain"
    )


def refuse_if_taken(dir_fd: int, domain: str) -> None:
    """Raise `DomainCollision` if the data dir `dir_fd` records another domain as the owner of
    `domain`'s shortened name. Reads only: a name nobody has claimed yet passes."""
    if not is_shortened(domain):
        return
    try:
        helper_fd = os.open(HELPER_DIR, _READ | os.O_DIRECTORY, dir_fd=dir_fd)
    except OSError:
        return  # no helper dir (yet): nothing is recorded
    try:
        stem = file_stem(domain)
        owner = read_owner(helper_fd, stem)
    finally:
        os.close(helper_fd)
    if owner is not None and owner != domain:
        raise collision(domain, stem, owner)
