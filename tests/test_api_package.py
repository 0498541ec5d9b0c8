"""The package installs whole: every directory of modules is a regular package that
setuptools finds (a directory without __init__.py would be left out of `pip install .`)."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_every_module_directory_is_a_package_setuptools_finds() -> None:
    found = set(find_packages(str(ROOT), include=["leitstand*"]))
    with_modules = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "leitstand").rglob("*.py")
    }
    assert "leitstand.http" in with_modules
    assert with_modules <= found, sorted(with_modules - found)
