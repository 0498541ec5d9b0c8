"""Data files named by an earlier rule for long domains, renamed to today's names at start.

For a while (wave 1, until issue 12) a domain longer than 211 characters was stored as
`<first 211 characters>-<32 hex digits of its SHA-256>.jsonl`; today it is `domains.file_stem`'s
name (the domain itself up to 235 characters, else 235 characters and 8 hex digits). So that an
upgraded install finds those events again, the embedded store and the NATS sink rename such a
file when they start, before they write anything. For each file with such a name, holding its
flock (waited for up to the lock timeout: of two workers starting at once, one renames it, and
the other, once it has the lock, finds the old name gone):

1. The file's lines name its domain, and the old name must be exactly that domain's old name
   (the 32 hex digits are checked). Otherwise the file is left alone.
2. If another file has the new name, or another domain owns the (shortened) new name
   (`owner.py`), or both names have a segment directory, both are left as they are and a
   warning names both files: the old file's events are not served until someone merges them.
3. The helper files of the old stem (`.leitstand/<old>.idem`, `.quarantine`, `.seq`, `.seg`,
   ...) are renamed to the new stem, the owner record of a shortened new name is written, the
   segment directory `archive/<old>/` is renamed too, and their directories fsynced. What they
   hold names the data file by inode, which a rename keeps: idempotency keys keep answering.
4. The data file gets its new name with `link` (which never replaces a file), the directory is
   fsynced, the old name is unlinked and the directory fsynced again.

A crash at any step leaves the old name in place until step 4's unlink, and the next start runs
the steps again: a helper already renamed is no longer under the old stem, and a new name that is
the same file (linked, not yet unlinked) is no obstacle.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re

import orjson

from ..domains import DATA_SUFFIX, HELPER_SUFFIXES, file_stem, normalize_domain
from ..errors import InvalidDomain, LeitstandError
from ..metrics import Metrics
from .datafile import HELPER_DIR, DataFile
from .files import identity, names
from .owner import claim, is_shortened, read_owner
from .segments import ARCHIVE_DIR, DIR_FLAGS

log = logging.getLogger("leitstand.store")

LEGACY_PREFIX = 211
LEGACY_HASH = 32
_LEGACY_NAME = re.compile(rf"[a-z0-9.-]{{{LEGACY_PREFIX}}}-[0-9a-f]{{{LEGACY_HASH}}}\.jsonl")
_SCAN_BYTES = 1024 * 1024  # lines of other tools may come first; a domain's line soon follows


def legacy_stem(domain: str) -> str | None:
    """The stem the earlier rule gave `domain`, None for a domain it did not shorten."""
    if len(domain) <= LEGACY_PREFIX:
        return None
    digest = hashlib.sha256(domain.encode("ascii")).hexdigest()[:LEGACY_HASH]
    return f"{domain[:LEGACY_PREFIX]}-{digest}"


def migrate_legacy_names(dir_fd: int, helper_fd: int, metrics: Metrics, *, fsync: bool,
                         lock_timeout: float) -> None:
    """Rename every data file with an old long-domain name to its new name (see above). Never
    raises for one file: what cannot be renamed now is logged and tried at the next start."""
    with os.scandir(dir_fd) as entries:
        found = sorted(e.name for e in entries
                       if _LEGACY_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False))
    for name in found:
        file = DataFile(name[: -len(DATA_SUFFIX)], dir_fd, helper_fd, metrics, fsync=fsync,
                        lock_timeout=lock_timeout)
        try:
            file.open(create=False)
            assert file.fd is not None
            file.lock()
            # Another worker may have renamed it while we waited for the lock.
            if names(file.name, dir_fd, identity(file.fd)):
                _migrate(file)
        except FileNotFoundError:
            pass  # renamed by another worker before we opened it
        except (LeitstandError, OSError) as exc:
            log.warning("cannot rename %s to its new name: %s", name, exc)
        finally:
            file.close()


def _migrate(file: DataFile) -> None:
    """(The old file's lock held.)"""
    domain = _domain_of(file)
    if domain is None:
        log.warning("%s has the old name of a long domain, but none of its first lines names "
                    "a domain with that name; left as it is", file.name)
        return
    stem = file_stem(domain)
    new_name = stem + DATA_SUFFIX
    taken = _taken(file, domain, stem)
    if taken is not None:
        log.warning("%s (the old name of domain %r) is not renamed to %s: %s. Both files are "
                    "kept; the events in %s are not served until they are merged by hand",
                    file.name, domain, new_name, taken, file.name)
        return
    for suffix in HELPER_SUFFIXES:
        if suffix != DATA_SUFFIX:
            _rename_if_there(file.stem + suffix, stem + suffix, file.helper_fd)
    if file.fsync:
        os.fsync(file.helper_fd)
    if is_shortened(domain):
        claim(file.helper_fd, stem, domain, fsync=file.fsync)
    _move_archive(file, stem)
    try:
        os.link(file.name, new_name, src_dir_fd=file.dir_fd, dst_dir_fd=file.dir_fd,
                follow_symlinks=False)
    except FileExistsError:
        # The same file, linked before a crash (`_taken` checked); or an outside tool created
        # the name just now: then keep both, as above.
        if os.stat(new_name, dir_fd=file.dir_fd, follow_symlinks=False).st_ino != file.inode:
            log.warning("%s is not renamed to %s: another file took that name meanwhile; both "
                        "are kept", file.name, new_name)
            return
    if file.fsync:
        os.fsync(file.dir_fd)
    os.unlink(file.name, dir_fd=file.dir_fd)
    if file.fsync:
        os.fsync(file.dir_fd)
    log.info("renamed %s to %s (the new name of domain %r), with its helper files",
             file.name, new_name, domain)


def _taken(file: DataFile, domain: str, stem: str) -> str | None:
    """Why the new name cannot be used, or None if it is free (or already this file)."""
    try:
        st = os.stat(stem + DATA_SUFFIX, dir_fd=file.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        if st.st_ino != file.inode:
            return "another file has that name"
    owner = read_owner(file.helper_fd, stem) if is_shortened(domain) else None
    if owner is not None and owner != domain:
        return f"the domain {owner!r} owns that shortened name ({HELPER_DIR}/{stem}.dom)"
    archive = _open(ARCHIVE_DIR, file.dir_fd)
    if archive is not None:
        try:
            new = _open(stem, archive)
            if new is not None:
                os.close(new)
                old = _open(file.stem, archive)
                if old is not None:
                    os.close(old)
                    return f"{ARCHIVE_DIR}/{stem}/ exists already"
        finally:
            os.close(archive)
    return None


def _move_archive(file: DataFile, stem: str) -> None:
    archive = _open(ARCHIVE_DIR, file.dir_fd)
    if archive is None:
        return
    try:
        if _rename_if_there(file.stem, stem, archive) and file.fsync:
            os.fsync(archive)
    finally:
        os.close(archive)


def _rename_if_there(old: str, new: str, dir_fd: int) -> bool:
    try:
        os.rename(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _open(name: str, dir_fd: int) -> int | None:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None


def _domain_of(file: DataFile) -> str | None:
    """The domain of the first line (within the first MiB) whose `domain` has this old name."""
    assert file.fd is not None
    head = os.pread(file.fd, _SCAN_BYTES, 0)
    for line in head.split(b"\n")[:-1]:  # whole lines only
        try:
            item = orjson.loads(line)
            domain = item.get("domain") if isinstance(item, dict) else None
            if isinstance(domain, str) and normalize_domain(domain) == domain and \
                    legacy_stem(domain) == file.stem:
                return domain
        except (orjson.JSONDecodeError, InvalidDomain):
            continue
    return None

