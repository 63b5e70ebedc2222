"""The validator against a corpus of deliberately broken runbooks.

Every file in tests/runbooks_broken/ is a small runbook broken in exactly one
way. Its first line declares the diagnostic the validator must give:

    # expect: LINE: FIELD: MESSAGE-SUBSTRING

LINE and FIELD must match exactly (FIELD `(file)` stands for a problem about the
whole file, which the CLI prints as `(file)`); MESSAGE-SUBSTRING must occur in
the message. The same corpus is run through the real CLI, and the good runbooks
in runbooks/ must stay clean.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.catalog import validate_file

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = Path("tests") / "runbooks_broken"  # relative to REPO, as the CLI displays it
GOOD_DIR = Path("runbooks")
GOOD_RUNBOOKS = ("network-congestion.yaml", "staffing-shortage.yaml", "system-outage.yaml")

EXPECT = re.compile(r"^# expect: (?P<line>\d+): (?P<field>.+?): (?P<message>.+)$")

def _corpus_names() -> list[str]:
    return sorted(p.name for p in (REPO / CORPUS_DIR).glob("*.y*ml"))


def _expectation(name: str) -> tuple[int, str, str]:
    first = (REPO / CORPUS_DIR / name).read_text(encoding="utf-8").splitlines()[0]
    match = EXPECT.match(first)
    assert match, f"{name}: first line is not `# expect: LINE: FIELD: MESSAGE`: {first!r}"
    return int(match["line"]), match["field"], match["message"]


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root, so problems show paths relative to it."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.mark.parametrize("name", _corpus_names())
def test_broken_runbook_gives_expected_problem(name: str, in_repo: Path) -> None:
    line, field, message = _expectation(name)
    path = CORPUS_DIR / name
    shown = path.as_posix()
    loaded, problems = validate_file(path)
    listing = "\n".join(str(p) for p in problems) or "(no problems)"

    assert problems, f"{name}: expected a problem, the validator found none"
    want_field = "" if field == "(file)" else field
    matching = [p for p in problems if p.line == line and p.field == want_field and message in p.message]
    assert matching, f"{name}: expected {line}: {field}: …{message}…; got\n{listing}"

    problem = matching[0]
    assert problem.file == shown
    text = str(problem)
    assert text.startswith(shown), text
    assert f":{line}:" in text, text
    assert text.startswith(f"{shown}:{line}: {field}: "), text
    # broken in exactly one way: nothing else is reported
    assert len(problems) == 1, f"{name}: expected only the one problem; got\n{listing}"


def test_corpus_is_big_enough_and_every_file_declares_its_expectation() -> None:
    names = _corpus_names()
    assert len(names) >= 20, names
    for name in names:
        line, field, message = _expectation(name)
        assert line >= 1 and field and message.strip()
        text = (REPO / CORPUS_DIR / name).read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 40, f"{name}: corpus files should stay small"


def _cli(*paths: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firebreak", "validate", *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_cli_on_broken_directory() -> None:
    result = _cli(CORPUS_DIR)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for name in _corpus_names():
        line, field, message = _expectation(name)
        prefix = f"{(CORPUS_DIR / name).as_posix()}:{line}: {field}: "
        assert any(err.startswith(prefix) and message in err for err in result.stderr.splitlines()), \
            f"{name}: no stderr line {prefix}…{message}…\n{result.stderr[-2000:]}"
        assert name not in result.stdout, f"{name} reported ok"
    assert f"{len(_corpus_names())} of {len(_corpus_names())} runbook(s) invalid" in result.stderr


def test_cli_on_good_runbooks_succeeds() -> None:
    result = _cli(GOOD_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in GOOD_RUNBOOKS:
        assert f"{name}: ok" in result.stdout, result.stdout


@pytest.mark.parametrize("name", GOOD_RUNBOOKS)
def test_good_runbook_has_no_problems(name: str, in_repo: Path) -> None:
    loaded, problems = validate_file(GOOD_DIR / name)
    assert problems == [], "\n".join(map(str, problems))
    assert loaded is not None
