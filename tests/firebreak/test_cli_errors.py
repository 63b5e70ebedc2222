"""The CLI's common mistakes end in one clear line on stderr and an exit code, never a
traceback: 2 for a usage or configuration mistake, 1 for anything else Firebreak refuses.

Each command runs as `python -m firebreak` with the test session's environment (conftest:
FIREBREAK_HOME and the session's PREFECT_API_URL).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firebreak.errors import ConfigInvalid, Conflict, NotFound, StepFailed

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Nothing listens here: a command that reached for Prefect would fail differently.
NO_PREFECT = "http://127.0.0.1:9/api"


def firebreak(*arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firebreak", *arguments], cwd=PROJECT_ROOT,
                          env={**os.environ, **environment}, capture_output=True, text=True, timeout=120)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_timeline_of_an_unknown_incident() -> None:
    result = firebreak("timeline", "INC-1999-0042")
    assert one_error_line(result) == "error: no incident 'INC-1999-0042'"
    assert result.returncode == 2


@pytest.mark.parametrize("prefect_api_url", [os.environ["PREFECT_API_URL"], NO_PREFECT],
                         ids=["session-server", "no-server"])
def test_run_of_a_misspelt_runbook_is_refused_before_prefect(prefect_api_url: str) -> None:
    # With no Prefect server at all the answer is the same: the runbook is checked before any
    # server is chosen, let alone a flow run created.
    result = firebreak("run", "sytem-outage", PREFECT_API_URL=prefect_api_url)
    assert one_error_line(result).startswith("error: no runbook 'sytem-outage' (looked for ")
    assert result.returncode == 2
    assert result.stdout == ""


def test_run_with_a_parameter_that_is_not_name_equals_value() -> None:
    result = firebreak("run", "system-outage", "--param", "bad", PREFECT_API_URL=NO_PREFECT)
    assert one_error_line(result) == "error: --param expects NAME=VALUE, got 'bad'"
    assert result.returncode == 2


def test_run_with_a_parameter_value_that_is_not_yaml() -> None:
    result = firebreak("run", "system-outage", "--param", "affected_customers=[", PREFECT_API_URL=NO_PREFECT)
    assert one_error_line(result).startswith("error: --param affected_customers: the value is read as YAML")
    assert result.returncode == 2


def test_run_with_an_unknown_parameter_name() -> None:
    result = firebreak("run", "system-outage", "--param", "afected_customers=10", PREFECT_API_URL=NO_PREFECT)
    line = one_error_line(result)
    assert line.startswith("error: parameters rejected by runbook system-outage: afected_customers: unknown parameter")
    assert "affected_customers" in line.split("its parameters:")[1]  # the names it does take
    assert result.returncode == 2


def test_run_with_a_parameter_value_the_runbook_rejects() -> None:
    result = firebreak("run", "system-outage", "--param", "affected_customers=-1", PREFECT_API_URL=NO_PREFECT)
    assert one_error_line(result).startswith("error: parameters rejected by runbook system-outage: "
                                             "affected_customers: ")
    assert result.returncode == 2


def test_a_configuration_file_with_problems_prints_its_located_lines(tmp_path: Path) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n"
                       "  am:\n"
                       "    format: nagios\n"
                       "    auth: {type: bearer, token_env: AM_TOKEN}\n"
                       "  gf:\n"
                       "    format: grafana\n"
                       "    auth: {type: bearer, token_env: lower-case}\n")
    result = firebreak("serve", "--executor", "none", "--port", "0", FIREBREAK_INTAKE_SOURCES_FILE=str(sources))
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and ":3: sources.am.format: " in lines[0]
    assert lines[1].startswith("error: ") and ":7: sources.gf.auth.token_env: " in lines[1]
    assert result.returncode == 2


@pytest.mark.parametrize(("error", "code"), [
    (NotFound("no incident 'INC-1'"), 2),
    (ConfigInvalid("a.yaml:1: x: wrong\na.yaml:2: y: wrong"), 2),
    (Conflict("INC-1 is resolved; it cannot go back to triggered"), 1),
    (StepFailed(""), 1),
])
def test_report_error_lines_and_exit_codes(error: Exception, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    from firebreak.cli.main import report_error

    assert report_error(error) == code  # type: ignore[arg-type]
    lines = capsys.readouterr().err.splitlines()
    expected = str(error).splitlines() or [StepFailed.__doc__.strip()]  # type: ignore[union-attr]
    assert lines == [f"error: {line}" for line in expected]
