"""Settings: environment and `.env`, defaults, refusal to start with a useful message, and every
setting documented in README.md."""

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
    s = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    assert s.token_bytes() == (b"dev",)


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
        "    if m.name != 'leitstand.__main__':\n"
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


def readme_settings_table() -> dict[str, str]:
    """The main settings table of README.md."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Konfigurations- und Umgebungsvariablen", 1)[1].split("\n## ", 1)[0]
    return table_rows(section)


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_the_readme(field) -> None:
    """In the main table (with its default), or in the table of the section about its feature
    (e.g. a backend's own settings)."""
    name = env_name(field)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^\|\s*`{name}`\s*\|", readme, re.M), (
        f"{name} is missing from README.md's settings tables")
    rows = readme_settings_table()
    default = Settings.model_fields[field].default
    if name in rows and field != "token":
        if isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        elif default == () or default is None:
            expected = "\N{EN DASH}"
        else:
            expected = str(default)
        assert rows[name] == expected, (name, rows[name], default)


def test_readme_table_has_no_unknown_settings() -> None:
    known = {env_name(f) for f in Settings.model_fields}
    assert set(readme_settings_table()) <= known


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
