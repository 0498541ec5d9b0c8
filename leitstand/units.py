"""Sizes and ages as people write them in settings: `64MiB`, `512KiB`, `7d`, `90m`."""

from __future__ import annotations

import re

_BYTES = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_AGES = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_bytes(value: object) -> int:
    """Bytes from an int or a string with an optional `KiB`/`MiB`/`GiB`/`TiB` suffix."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        number, unit = _split(value, "a size such as 67108864, 512KiB, 64MiB or 1GiB")
    factor = _BYTES.get(unit.lower())
    if factor is None:
        raise ValueError(f"{value!r}: unknown unit {unit!r} (use KiB, MiB, GiB or TiB)")
    return int(number * factor)


def parse_age(value: object) -> float:
    """Seconds from a number or a string with an optional `s`/`m`/`h`/`d` suffix."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        number, unit = _split(value, "an age such as 3600, 90m, 12h or 7d")
    factor = _AGES.get(unit)
    if factor is None:
        raise ValueError(f"{value!r}: unknown unit {unit!r} (use s, m, h or d)")
    return number * factor


def parse_optional_bytes(value: object) -> int | None:
    """`parse_bytes` of a positive size, with None, "" and "off" meaning: not set."""
    return None if _unset(value) else int(_positive(parse_bytes(value)))


def parse_optional_age(value: object) -> float | None:
    """`parse_age` of a positive age, with None, "" and "off" meaning: not set."""
    return None if _unset(value) else _positive(parse_age(value))


def _positive(number: float) -> float:
    if number <= 0:
        raise ValueError("must be more than 0 (or off)")
    return number


def _unset(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "off"))


def _split(value: object, example: str) -> tuple[float, str]:
    match = _NUMBER.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not {example}")
    return float(match.group(1)), match.group(2)
