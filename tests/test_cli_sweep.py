"""Every subcommand, with the usual mistakes: one plain line on stderr, exit 2, no traceback,
nothing created (issue 18, item 2).

The commands are read from the parser itself, so a subcommand added later is swept too. Each
gets: a config file that does not exist, a config with a misspelt key, an unknown option, a
missing (or a stray) argument, and well-formed arguments that name things that are not there
(absent files, an absent store, an absent rules directory, an unknown message id).
`serve` runs as a real process (it sets up logging for the whole process); the rest in-process.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pytest

from dlpgate.cli import build_parser, subcommands
from dlpgate.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent


def _leaves() -> list[tuple[list[str], argparse.ArgumentParser]]:
    return [(path, p) for path, p in subcommands(build_parser())
            if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)]  # noqa: SLF001


LEAVES = _leaves()
CASES = ("missing_config", "bad_key", "unknown_option", "wrong_arity", "absent_things")


def _value(dest: str, tmp: Path) -> str:
    """A well-formed value that names something absent."""
    if dest in ("file", "paths", "path") or "file" in dest or "path" in dest:
        return str(tmp / "absent" / "thing")
    if dest in ("dir", "rules") or "dir" in dest:
        return str(tmp / "absent-dir")
    if dest == "id":
        return "0123456789abcdef0123"
    if dest == "reason":
        return "a reason"
    if dest == "login":
        return "someone"
    return "someone@example.jp"


def _filled(p: argparse.ArgumentParser, tmp: Path) -> list[str]:
    args: list[str] = []
    for a in p._actions:  # noqa: SLF001
        if a.option_strings and a.required:
            args += [a.option_strings[-1], _value(a.dest, tmp)]
        elif not a.option_strings and a.nargs != "?" and a.nargs != "*":
            args.append(_value(a.dest, tmp))
    return args


def _argv(path: list[str], p: argparse.ArgumentParser, case: str, tmp: Path) -> list[str]:
    good = tmp / "good.toml"
    good.write_text(f'[smtp]\nlisten = "127.0.0.1:0"\n[metrics]\nlisten = ""\n'
                    f'[store]\npath = "{tmp / "no-store"}"\n[policy]\nrules = "{tmp / "no-rules"}"\n',
                    encoding="utf-8")
    bad = tmp / "bad.toml"
    bad.write_text('[smtp]\nlisten_adress = "127.0.0.1:10025"\n', encoding="utf-8")
    filled = _filled(p, tmp)
    if case == "missing_config":
        return [*path, *filled, "--config", str(tmp / "absent.toml")]
    if case == "bad_key":
        return [*path, *filled, "--config", str(bad)]
    if case == "unknown_option":
        return [*path, *filled, "--no-such-option", "--config", str(good)]
    if case == "wrong_arity":  # required arguments left out, or one stray argument too many
        return [*path, "--config", str(good)] if filled else [*path, "stray-argument", "--config", str(good)]
    return [*path, *filled, "--config", str(good)]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check(code: int, err: str, case: str, argv: list[str]) -> None:
    lines = err.splitlines()
    assert code == 2, (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    assert len(lines) == 1 and lines[0].strip(), (argv, err)
    if case == "bad_key":
        assert "smtp.listen_adress" in err, err  # the bad key is named
    if case == "missing_config":
        assert "absent.toml" in err, err


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("path,parser", [pytest.param(p, q, id="-".join(p)) for p, q in LEAVES
                                         if p != ["serve"]])
def test_every_subcommand_answers_bad_input_in_one_line(path: list[str], parser: argparse.ArgumentParser,
                                                        case: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DLPGATE_CONFIG", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, nothing piped in
    argv = _argv(path, parser, case, tmp_path)
    before = _tree(tmp_path)
    try:
        code = cli_main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = int(e.code or 0)
    out = capsys.readouterr()
    _check(code, out.err, case, argv)
    assert _tree(tmp_path) == before, f"{argv} created {_tree(tmp_path) - before}"


@pytest.mark.parametrize("case", CASES)
def test_serve_answers_bad_input_in_one_line(case: str, tmp_path: Path) -> None:
    (parser,) = [q for p, q in LEAVES if p == ["serve"]]
    argv = _argv(["serve"], parser, case, tmp_path)
    before = _tree(tmp_path)
    r = subprocess.run([sys.executable, "-m", "dlpgate.cli", *argv], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    _check(r.returncode, r.stderr, case, argv)
    if case == "absent_things":
        assert "policy.rules" in r.stderr and "no-rules" in r.stderr
    assert _tree(tmp_path) == before, f"{argv} created {_tree(tmp_path) - before}"


def test_the_sweep_covers_every_documented_command() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    for cmd in ("serve", "config check", "scan", "rules check", "auth add", "auth remove", "auth list",
                "outbox list", "quarantine list", "audit verify", "log search"):
        assert cmd in names
