"""The token module on its own: domain patterns, the tokens file (every problem named with its
line), the constant-time lookup, and `leitstand token new/check`."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import leitstand.access.tokens as tokens_module
from leitstand.access.tokenfile import TokenFileError, load_token_file, parse_token_file
from leitstand.access.tokens import DomainPatterns, PatternError, TokenSet, digest_of
from leitstand.cli import main as cli_main
from testing import ROOT


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def entry(name: str, secret: str, write: str = '["garten.*"]', read: str = "[]",
          extra: str = "") -> str:
    return (f'[[token]]\nname = "{name}"\nsha256 = "{sha(secret)}"\nwrite = {write}\n'
            f"read = {read}\n{extra}\n")


def parse(text: str) -> TokenSet:
    return parse_token_file(text.encode(), "tokens.toml")


def problem(text: str) -> TokenFileError:
    with pytest.raises(TokenFileError) as info:
        parse(text)
    return info.value


# -- patterns ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("patterns", "domain", "expected"), [
    (["*"], "keller", True),
    (["garten.*"], "garten.beet", True),
    (["garten.*"], "garten.beet.sensor-1", True),
    (["garten.*"], "garten", False),  # like a glob: `garten.*` is below garten
    (["garten.*"], "gartenhaus", False),
    (["garten.*"], "vorgarten.beet", False),
    (["aussen"], "aussen", True),
    (["aussen"], "aussen.temp", False),
    (["Aussen ", "GARTEN.*"], "garten.x", True),  # patterns are normalised like domains
    (["aussen", "garten.*"], "keller", False),
    ([], "aussen", False),
])
def test_patterns_match_normalised_domains(patterns, domain, expected) -> None:
    assert DomainPatterns.parse(patterns).matches(domain) is expected


@pytest.mark.parametrize("bad", ["garten.**", "*.garten", "gar*ten", "", "a..b", "-x", 5])
def test_invalid_patterns_are_refused(bad) -> None:
    with pytest.raises(PatternError):
        DomainPatterns.parse([bad])


# -- the file ----------------------------------------------------------------------------------
def test_a_valid_file_gives_named_scoped_tokens() -> None:
    text = ("# producers\n" + entry("garten-sensor", "s1", extra='rate_limit = "30/minute"')
            + entry("leser", "s2", write="[]", read='["aussen"]',
                    extra="expires = 2027-06-01T00:00:00Z"))
    tokens = parse(text)
    garten, leser = tokens.tokens
    assert (garten.name, garten.line, garten.rate_limit) == ("garten-sensor", 2, "30/minute")
    assert garten.can_write("garten.beet") and not garten.can_read("garten.beet")
    assert (leser.name, leser.line) == ("leser", 8)
    assert leser.can_read("aussen") and not leser.can_write("aussen")
    assert leser.expires == datetime(2027, 6, 1, tzinfo=timezone.utc)
    assert tokens.identify(b"s1") is garten and tokens.identify(b"s2") is leser
    assert tokens.identify(b"s3") is None


def test_expires_as_a_string_and_expiry() -> None:
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    tokens = parse(entry("alt", "s", extra=f'expires = "{past}"')
                   + entry("neu", "t", extra='expires = "2099-01-01T00:00:00+02:00"'))
    assert tokens.tokens[0].expired() and not tokens.tokens[1].expired()


@pytest.mark.parametrize(("text", "line", "words"), [
    ('[[token]]\nname = "a"\nsha256 = \n', 3, "not valid TOML"),
    (entry("a", "s") + '\n[[token]]\nname = "b"\nwrite = ["x"]\n', 8, "sha256 must be"),
    (entry("a", "s") + '\n[[token]]\nname = "b"\nsha256 = "abc"\nwrite = ["x"]\n', 10,
     "sha256 must be"),
    ('# x\n\n[[token]]\nname = "a"\nsha256 = "' + sha("s") + '"\nwrite = ["x"]\nsecret = "s"\n',
     7, "unknown key 'secret'"),
    (entry("a", "s") + entry("a", "t"), 8, "name 'a' is used twice (also at line 1)"),
    (entry("a", "s") + entry("b", "s"), 9, "the same sha256 as the token at line 1"),
    (entry("default", "s"), 2, "reserved for LEITSTAND_TOKEN"),
    (entry("a b", "s"), 2, "name must be"),
    (entry("a", "s", write='["gar*ten"]'), 4, "write: 'gar*ten' is not a domain pattern"),
    (entry("a", "s", write='"garten.*"'), 4, "write must be a list"),
    (entry("a", "s", write="[]"), 1, "may do nothing"),
    (entry("a", "s", extra='rate_limit = "often"'), 6, "rate_limit must be"),
    (entry("a", "s", extra="expires = 2027-06-01T00:00:00"), 6, "with an offset"),
    (entry("a", "s", extra="expires = 2027-06-01"), 6, "with an offset"),
    (entry("a", "s", extra='expires = "soon"'), 6, "RFC 3339"),
    ('tokens = 1\n' + entry("a", "s"), 1, "unknown key 'tokens'"),
    (entry("a", "s") + "[dependencies]\nx = 1\n", 7, "unknown key 'dependencies'"),
    ('token = "x"\n', 1, "must be [[token]] tables"),
])
def test_every_problem_names_its_line(text, line, words) -> None:
    error = problem(text)
    assert error.line == line, str(error)
    assert words in error.problem
    assert str(error).startswith(f"tokens.toml, line {line}: ")
    assert sha("s") not in str(error) and sha("t") not in str(error)  # never a digest


def test_empty_and_non_utf8_files_are_refused() -> None:
    assert "empty" in problem("  \n").problem
    with pytest.raises(TokenFileError) as info:
        parse_token_file(b"# ok\n# \xff\n", "tokens.toml")
    assert info.value.line == 2 and "UTF-8" in info.value.problem
    assert len(parse("# no tokens yet\n")) == 0  # a comment: deliberately empty


def test_an_unreadable_file_is_named(tmp_path) -> None:
    with pytest.raises(TokenFileError) as info:
        load_token_file(tmp_path / "missing.toml")
    assert str(tmp_path / "missing.toml") in str(info.value) and "cannot read" in str(info.value)


# -- constant time -------------------------------------------------------------------------------
def test_lookup_hashes_once_and_compares_with_every_entry(monkeypatch) -> None:
    """Code review, made executable: one SHA-256 of the presented value, then
    hmac.compare_digest against every entry's digest — also after a match."""
    tokens = parse(entry("a", "s1") + entry("b", "s2") + entry("c", "s3"))
    seen: list[tuple[bytes, bytes]] = []
    real = tokens_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    hashed: list[bytes] = []
    real_digest = tokens_module.hashlib.sha256

    def digest_spy(data: bytes = b"") -> object:
        hashed.append(data)
        return real_digest(data)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    monkeypatch.setattr(tokens_module.hashlib, "sha256", digest_spy)
    for given in (b"s1", b"s3", b"nope"):
        seen.clear()
        hashed.clear()
        tokens.identify(given)
        assert hashed == [given]
        assert seen == [(digest_of(given), t.digest) for t in tokens.tokens]


def test_an_oversized_value_never_matches() -> None:
    long = "x" * 1025
    tokens = parse(entry("a", long))
    assert tokens.identify(long.encode()) is None


# -- the CLI ---------------------------------------------------------------------------------
def test_token_new_prints_the_secret_once_and_an_entry_with_its_hash(tmp_path, capsys) -> None:
    code = cli_main(["token", "new", "garten-sensor", "--write", "garten.*", "--read", "aussen",
                     "--rate-limit", "30/minute", "--expires", "2099-01-01T00:00:00Z"])
    out, err = capsys.readouterr()
    assert code == 0
    secret = err.strip().splitlines()[-1]
    assert len(secret) >= 43 and secret not in out  # 256 random bits, not in the file part
    path = tmp_path / "tokens.toml"
    path.write_text("# tokens\n" + out)
    token = load_token_file(path).identify(secret.encode())
    assert token is not None and token.name == "garten-sensor"
    assert token.can_write("garten.beet") and token.can_read("aussen")
    assert not token.can_read("garten.beet") and token.rate_limit == "30/minute"
    assert cli_main(["token", "new", "b", "--write", "*"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] != secret  # fresh each time


@pytest.mark.parametrize("args", [
    ["bad name", "--write", "*"], ["a", "--write", "gar*ten"], ["a"], ["default", "--read", "*"],
    ["a", "--write", "*", "--expires", "tomorrow"],
])
def test_token_new_refuses_what_the_file_would_refuse(args, capsys) -> None:
    assert cli_main(["token", "new", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("leitstand: ")


def test_token_check_validates_a_file(tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(entry("a", "s") + entry("b", "t", read='["*"]',
                                            extra='expires = "2001-01-01T00:00:00Z"'))
    good.chmod(0o600)
    bad = tmp_path / "bad.toml"
    bad.write_text(entry("a", "s") + entry("a", "t"))
    run = [sys.executable, "-m", "leitstand.cli", "token", "check"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert "2 token(s)" in ok.stdout and "EXPIRED" in ok.stdout and "warning" not in ok.stdout
    good.chmod(0o666)
    loose = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=60,
                           cwd=ROOT)
    assert loose.returncode == 0 and "writable by group or others" in loose.stdout
    broken = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert broken.returncode == 2
    assert f"{bad}, line 8: name 'a' is used twice" in broken.stderr


def test_the_example_in_the_reference_is_a_valid_file() -> None:
    reference = (ROOT / "docs" / "tokens.md").read_text(encoding="utf-8")
    block = reference.split("```toml\n", 1)[1].split("```", 1)[0]
    tokens = parse(block)
    assert len(tokens) >= 2


