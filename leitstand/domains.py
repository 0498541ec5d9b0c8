"""Domain names: validation, normalisation, and the mapping to file names in the data dir."""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidDomain

MAX_DOMAIN = 253
MAX_FILE_NAME = 255
DATA_SUFFIX = ".jsonl"
# Every file the service names after a domain is `<stem><suffix>` with one of these suffixes.
HELPER_SUFFIXES = (DATA_SUFFIX, ".idem", ".quarantine", ".idem.tmp", ".seq", ".seq.tmp", ".seg",
                   ".seg.tmp", ".dom", ".dom.tmp")
_LONGEST_SUFFIX = max(len(s) for s in HELPER_SUFFIXES)
# Domains up to this length are their own stem; longer ones are cut to a prefix plus 8 hex
# digits of their SHA-256, as the spec says. A hashed stem is longer than any plain one, so the
# two kinds never collide. Two long domains can share a hashed stem (32 bits: a birthday search
# finds a pair in a second); the store then refuses the second one (store/owner.py).
_HASH_LEN = 8
PLAIN_STEM_MAX = MAX_FILE_NAME - _LONGEST_SUFFIX - 1 - _HASH_LEN

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_domain(raw: object) -> str:
    """Trim and lowercase `raw`, then check it against FQDN rules. Raise `InvalidDomain`."""
    if not isinstance(raw, str):
        raise InvalidDomain("domain must be a string")
    domain = raw.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise InvalidDomain("domain must not be empty")
    if len(domain) > MAX_DOMAIN:
        raise InvalidDomain(f"domain longer than {MAX_DOMAIN} characters")
    for label in domain.split("."):
        if not _LABEL.fullmatch(label):
            raise InvalidDomain(
                "invalid domain: labels are 1-63 characters of a-z, 0-9 and '-', "
                "not starting or ending with '-'"
            )
    return domain


def file_stem(domain: str) -> str:
    """The base name used for every file of `domain` (already normalised)."""
    if len(domain) <= PLAIN_STEM_MAX:
        return domain
    digest = hashlib.sha256(domain.encode("ascii")).hexdigest()[:_HASH_LEN]
    return f"{domain[:PLAIN_STEM_MAX]}-{digest}"


def data_file_name(domain: str) -> str:
    return file_stem(domain) + DATA_SUFFIX
