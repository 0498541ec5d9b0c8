"""Settings: environment and `.env`, defaults, refusal to start with a useful message, and every
setting documented in docs/configuration.md (the essential ones also in README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from leitstand.config import Settings, env_name, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """No LEITSTAND_* / LOG_LEVEL from the outside, and a cwd without a `.env`."""
    import os

    for name in list(os.environ):
        if name.startswith("LEITSTAND_") or name == "LOG_LEVEL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    s = load_settings()
    assert s.data_dir == Path("data")
    assert s.max_body == 1_048_576
    assert s.lock_timeout == 30
    assert s.rate_limit == "60/minute"
    assert s.log_level == "INFO"
    assert s.fsync == "always"
    assert s.token_bytes() == (b"t",)


def test_environment_is_read(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LEITSTAND_TOKEN", "from-env")
    monkeypatch.setenv("LEITSTAND_DATA_DIR", "/srv/events")
    monkeypatch.setenv("LEITSTAND_MAX_BODY", "2048")
    monkeypatch.setenv("LEITSTAND_LOCK_TIMEOUT", "2.5")
    monkeypatch.setenv("LEITSTAND_RATE_LIMIT", "100/second")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    s = load_settings()
    assert (s.token_bytes(), s.data_dir, s.max_body, s.lock_timeout, s.rate_limit,
            s.log_level) == ((b"from-env",), Path("/srv/events"), 2048, 2.5, "100/second",
                             "WARNING")


def test_dotenv_in_the_working_directory_is_read(clean_env) -> None:
    (clean_env / ".env").write_text(
        "LEITSTAND_TOKEN=from-dotenv\nLEITSTAND_MAX_BODY=4096\nLOG_LEVEL=DEBUG\nPORT=8788\n"
    )
    s = load_settings()
    assert s.token_bytes() == (b"from-dotenv",)
    assert s.max_body == 4096
    assert s.log_level == "DEBUG"


def test_environment_wins_over_dotenv(clean_env, monkeypatch) -> None:
    (clean_env / ".env").write_text("LEITSTAND_TOKEN=from-dotenv\nLEITSTAND_MAX_BODY=4096\n")
    monkeypatch.setenv("LEITSTAND_TOKEN", "from-env")
    s = load_settings()
    assert s.token_bytes() == (b"from-env",)
    assert s.max_body == 4096


def test_explicit_env_file(tmp_path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("LEITSTAND_TOKEN=abc\nLEITSTAND_RATE_LIMIT=5/second\n")
    s = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert s.token_bytes() == (b"abc",)
    assert s.rate_limit == "5/second"


def test_env_example_is_valid_and_matches_the_readme(clean_env) -> None:
    example = (ROOT / ".env.example").read_text()
    assert "LEITSTAND_TOKEN=dev\n" in example
    assert "PORT=8788\n" in example
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`.env.example` liefert passende Standardwerte (Token\n`dev`, Port `8788`)" in readme
    s = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert s.token_bytes() == (b"dev",)
    # every other value in it is the documented default, so copying it changes nothing else
    fields = {env_name(f): f for f in Settings.model_fields}
    for name, value in re.findall(r"^([A-Z_]+)=(.*)$", example, re.M):
        if name not in ("LEITSTAND_TOKEN", "PORT"):
            assert value == documented_default(fields[name]), name


def test_missing_token_refuses_to_start_and_says_how(clean_env, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "LEITSTAND_TOKEN is not set" in err
    assert "export LEITSTAND_TOKEN=" in err and ".env" in err


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("LEITSTAND_TOKEN", "", "must not be empty"),
        ("LEITSTAND_TOKEN", " , ", "must not be empty"),
        ("LEITSTAND_TOKEN", "tök", "printable ASCII"),
        ("LEITSTAND_MAX_BODY", "1MiB", "valid integer"),
        ("LEITSTAND_MAX_BODY", "0", "greater than 0"),
        ("LEITSTAND_MAX_EVENTS", "-1", "greater than 0"),
        ("LEITSTAND_LOCK_TIMEOUT", "soon", "valid number"),
        ("LEITSTAND_LOCK_TIMEOUT", "0", "greater than 0"),
        ("LEITSTAND_RATE_LIMIT", "lots", "limits` notation"),
        ("LEITSTAND_RATE_LIMIT", "0/minute", "at least one"),
        ("LEITSTAND_RATE_LIMIT", "1/second;10/minute", "exactly one"),
        ("LEITSTAND_FSYNC", "sometimes", "'always' or 'off'"),
        ("LEITSTAND_TRUSTED_PROXIES", "proxy.local", "IPv4 or IPv6"),
        ("LOG_LEVEL", "LOUD", "'DEBUG'"),
    ],
)
def test_invalid_value_refuses_to_start_naming_the_variable(clean_env, monkeypatch, capsys,
                                                            name, value, fragment) -> None:
    if name != "LEITSTAND_TOKEN":
        monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert err.startswith("leitstand: cannot start:\n")
    assert f"{name} is invalid: " in err, err
    assert fragment in err, err
    assert "Value error," not in err
    if name == "LEITSTAND_TOKEN":
        assert "export LEITSTAND_TOKEN=" in err


def test_token_list_for_rotation(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LEITSTAND_TOKEN", " new , old ,")
    assert load_settings().token_bytes() == (b"new", b"old")


def test_token_is_not_in_repr(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LEITSTAND_TOKEN", "very-secret-value")
    s = load_settings()
    assert "very-secret-value" not in repr(s) and "very-secret-value" not in str(s)


def test_settings_are_frozen(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    s = load_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its ValidationError
        s.max_body = 5  # type: ignore[misc]


def test_nothing_is_read_from_the_environment_at_import(tmp_path) -> None:
    """Every module of the package imports without any setting (a fresh interpreter, no
    LEITSTAND_* variables, a cwd without .env); only app.py builds the app from the environment."""
    import os
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, leitstand\n"
        "for m in pkgutil.walk_packages(leitstand.__path__, 'leitstand.'):\n"
        "    if not m.name.endswith('.__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LEITSTAND_") and k != "LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    entry = subprocess.run([sys.executable, "-c", "import app"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert entry.returncode != 0 and "LEITSTAND_TOKEN is not set" in entry.stderr


def table_rows(text: str) -> dict[str, str]:
    """`| `NAME` | ... | default | ...` rows: variable name → the third column."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`([A-Z_]+)`\s*\|([^|]*)\|\s*([^|]*?)\s*\|", line)
        if match:
            rows[match.group(1)] = match.group(3).strip("` ")
    return rows


def section(text: str, heading: str) -> str:
    """From `heading` to the next `## ` heading."""
    assert f"{heading}\n" in text, f"no heading {heading!r}"
    return text.split(f"{heading}\n", 1)[1].split("\n## ", 1)[0]


def reference_settings_tables() -> dict[str, str]:
    """The server settings tables of docs/configuration.md (general and NATS backend)."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for heading in ("## Server settings", "## NATS backend settings"):
        rows.update(table_rows(section(text, heading)))
    return rows


def readme_settings_table() -> dict[str, str]:
    """The settings table of README.md: the essential settings."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return table_rows(section(readme, "## Konfigurations- und Umgebungsvariablen"))


def documented_default(field: str) -> str:
    """A setting's default as the tables print it."""
    default = Settings.model_fields[field].default
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if default in ((), None):
        return "\N{EN DASH}"
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(field) -> None:
    """Every setting is a row of docs/configuration.md's server tables, with its default."""
    name = env_name(field)
    rows = reference_settings_tables()
    assert name in rows, f"{name} is missing from docs/configuration.md's settings tables"
    if field != "token":
        assert rows[name] == documented_default(field), (name, rows[name])


def test_reference_tables_have_no_unknown_settings() -> None:
    known = {env_name(f) for f in Settings.model_fields}
    assert set(reference_settings_tables()) <= known


# The spec's settings table: the README keeps (at least) these, each with its default.
README_ESSENTIALS = {"LEITSTAND_TOKEN", "LEITSTAND_DATA_DIR", "LEITSTAND_MAX_BODY",
                     "LEITSTAND_LOCK_TIMEOUT", "LEITSTAND_RATE_LIMIT", "LOG_LEVEL"}


def test_readme_table_has_the_essential_settings_with_their_defaults() -> None:
    rows = readme_settings_table()
    assert set(rows) >= README_ESSENTIALS, README_ESSENTIALS - set(rows)
    fields = {env_name(f): f for f in Settings.model_fields}
    assert set(rows) <= set(fields), set(rows) - set(fields)
    for name, default in rows.items():
        if name != "LEITSTAND_TOKEN":
            assert default == documented_default(fields[name]), (name, default)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/configuration.md)" in section(readme, "## Konfigurations- und Umgebungsvariablen")


def test_data_dir_is_created_at_start(clean_env, monkeypatch) -> None:
    monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    monkeypatch.setenv("LEITSTAND_DATA_DIR", str(clean_env / "a" / "b"))
    load_settings()
    assert (clean_env / "a" / "b").is_dir()


def test_data_dir_that_cannot_be_created_refuses_to_start(clean_env, monkeypatch,
                                                          capsys) -> None:
    (clean_env / "file").write_text("x")
    monkeypatch.setenv("LEITSTAND_TOKEN", "t")
    monkeypatch.setenv("LEITSTAND_DATA_DIR", str(clean_env / "file" / "data"))
    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert "LEITSTAND_DATA_DIR is invalid: cannot create" in err
    assert "Not a directory" in err


def test_env_example_names_only_real_settings() -> None:
    known = {env_name(f) for f in Settings.model_fields} | {"PORT"}
    keys = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M)
    assert keys and set(keys) <= known, set(keys) - known
