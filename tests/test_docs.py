"""The documentation holds together: the README stays a front door, and every relative link in
README.md, SECURITY.md and docs/*.md points to a file that exists (and to a heading in it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "SECURITY.md", *sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
REFERENCE = ["configuration", "api", "storage", "operations", "cluster", "clients",
             "architecture"]


def anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of a Markdown file."""
    found: set[str] = set()
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_to_existing_files_and_headings(page: str) -> None:
    source = ROOT / page
    for link in links(source):
        if re.match(r"[a-z]+:", link):
            continue  # http(s), mailto: not checked here
        target, _, fragment = link.partition("#")
        path = (source.parent / target).resolve() if target else source
        assert path.exists(), f"{page}: {link} points to a missing file"
        if fragment:
            assert path.suffix == ".md", f"{page}: {link}"
            assert fragment in anchors(path), f"{page}: {link} names no heading of {path.name}"


def test_readme_is_a_front_door() -> None:
    """At most ~200 lines, and it links every reference page in docs/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200, "move reference text to docs/"
    for name in REFERENCE:
        assert (ROOT / "docs" / f"{name}.md").exists(), name
        assert f"(docs/{name}.md)" in readme, f"README.md does not link docs/{name}.md"
    for heading in ("## Schnellstart", "## Konfigurations- und Umgebungsvariablen",
                    "## Datenspeicherung", "## Betrieb & Wartung",
                    "## Client-Library (hausKI → Leitstand)"):
        assert f"\n{heading}\n" in readme, heading  # the spec's sections stay recognisable


def test_security_policy_names_tests_that_exist() -> None:
    policy = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
        defined.add(path.relative_to(ROOT).as_posix())
    named = re.findall(r"`((?:tests/)?test_\w+(?:\.py)?)`", policy)
    assert named
    missing = [name for name in named if name not in defined and f"tests/{name}" not in defined]
    assert not missing, missing


def test_every_variable_the_docs_name_exists() -> None:
    """A `LEITSTAND_*` name in README.md, SECURITY.md or docs/ is a server setting, a client
    setting, or a knob the test suite reads (no renamed or invented variables)."""
    from dataclasses import fields

    from leitstand.client.config import ClientConfig
    from leitstand.config import Settings, env_name

    known = {env_name(f) for f in Settings.model_fields}
    known |= {f"LEITSTAND_{f.name.upper()}" for f in fields(ClientConfig)}
    suite = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("*.py"))
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for name, wildcard in re.findall(r"(LEITSTAND_[A-Z0-9]+(?:_[A-Z0-9]+)*)(_\*)?", text):
            if wildcard:
                assert any(k.startswith(name + "_") for k in known), f"{page}: {name}_*"
            else:
                assert name in known or f'"{name}"' in suite, f"{page} names unknown {name}"


@pytest.mark.parametrize("page", PAGES)
def test_every_make_target_and_command_the_docs_name_exists(page: str) -> None:
    import argparse

    from leitstand.cli import build_parser

    text = (ROOT / page).read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", text, re.M)):
        assert re.search(rf"^{target}:", makefile, re.M), f"{page}: make {target}"
    subparsers = next(a for a in build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction))
    for command in set(re.findall(r"`leitstand ([a-z]+)", text)):
        assert command in subparsers.choices, f"{page}: leitstand {command}"
