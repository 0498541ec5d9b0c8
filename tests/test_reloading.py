"""leitstand.reloading's `settle` (used by the tokens file): a change is taken only once it has
stayed so, a file edited in place is never taken half written, and a load during which the
file changed is thrown away. Driven by a fake clock: nothing here waits on time."""

from __future__ import annotations

from pathlib import Path

from leitstand.reloading import Reloadable, file_fingerprint


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def watch(path: Path, clock: Clock, **kwargs: object) -> Reloadable[list[str]]:
    return Reloadable("f", lambda: lines(path), lambda: file_fingerprint(path), interval=2.0,
                      settle=1.0, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_a_change_is_taken_once_it_has_stayed_so_for_settle(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_text("a\n")
    clock = Clock()
    value = watch(path, clock)
    path.write_text("b\n")
    clock.now = 2.0
    assert value.current() == ["a"]  # seen, but just now
    clock.now = 2.5
    assert value.current() == ["a"]  # looked at again only once `settle` has passed
    clock.now = 3.0
    assert value.current() == ["b"]


def test_a_file_still_being_written_is_never_taken(tmp_path) -> None:
    """Truncate, write a part that parses, write more before `settle` is over, and so on:
    every look sees another state, so none is taken until the writing stops."""
    path = tmp_path / "f"
    path.write_text("a\nb\n")
    clock = Clock()
    value = watch(path, clock)
    with open(path, "r+") as f:
        f.truncate(0)
        for step, part in enumerate(["x\n", "y\n", "z\n"]):
            f.write(part)
            f.flush()
            clock.now = 2.0 + 0.9 * step
            assert value.current() == ["a", "b"], step
    clock.now += 1.0
    assert value.current() == ["x", "y", "z"]


def test_a_load_during_which_the_file_changed_is_thrown_away(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_text("a\n")
    clock = Clock()
    loads = 0

    def load() -> list[str]:
        nonlocal loads
        text = lines(path)
        loads += 1
        if loads == 2:
            path.write_text("c\nd\n")  # a writer comes in while this load reads
        return text

    value = Reloadable("f", load, lambda: file_fingerprint(path), interval=2.0, settle=1.0,
                       clock=clock)
    path.write_text("b\n")
    clock.now = 2.0
    value.current()
    clock.now = 3.0
    assert value.current() == ["a"]  # the load saw "b", but the file moved on meanwhile
    clock.now = 4.0
    assert value.current() == ["c", "d"]


def test_a_broken_file_keeps_the_value_and_a_missing_one_too(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_text("1\n")
    clock = Clock()
    errors: list[str | None] = []
    value = Reloadable("f", lambda: int(path.read_text()), lambda: file_fingerprint(path),
                       interval=2.0, settle=1.0, clock=clock,
                       on_change=lambda _v, e: errors.append(e))
    path.write_text("x\n")
    for clock.now in (2.0, 3.0, 5.0, 7.0):
        assert value.current() == 1
    assert value.error is not None and "invalid literal" in value.error
    assert errors == [None, value.error]  # reported once, not on every look
    path.unlink()
    clock.now = 9.0
    assert value.current() == 1 and "cannot read" in (value.error or "")
    path.write_text("2\n")
    for clock.now in (11.0, 12.0):
        value.current()
    assert value.current() == 2 and value.error is None
