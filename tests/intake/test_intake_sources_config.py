"""intake/sources.yaml problems are reported like every other config file's:
`file:line: field: message`, one line per problem, and never with a secret in them."""
from __future__ import annotations

from pathlib import Path

import pytest

from intake.settings import INTAKE_DIR
from intake.sources import ENV_NAME, BearerAuth, HmacAuth, RoutingKeyAuth, SourcesInvalid, load_sources

NOT_A_ROUTING_KEY_SOURCE = "a pagerduty source authenticates with `type: routing_key`, and only it does"


def problems_in(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(SourcesInvalid) as caught:
        load_sources(path)
    return path, str(caught.value)


@pytest.mark.parametrize("text, line, field, message", [
    pytest.param("sources:\n  am:\n    format: alertmanager\n    auth:\n      type: oauth\n      token_env: AM_TOKEN\n",
                 5, "sources.am.auth.type", "got 'oauth'; expected one of 'bearer', 'routing_key', 'hmac'",
                 id="unknown auth type"),
    pytest.param("sources:\n  am:\n    format: alertmanager\n    auth:\n      token_env: AM_TOKEN\n",
                 4, "sources.am.auth.type", "required field is missing", id="auth type missing"),
    pytest.param("sources:\n  am:\n    format: alertmanager\n    auth:\n      type: bearer\n",
                 4, "sources.am.auth.token_env", "required field is missing", id="missing token_env"),
    pytest.param("sources:\n  pd:\n    format: pagerduty\n    auth: {type: bearer, token_env: PD_TOKEN}\n",
                 4, "sources.pd.auth", NOT_A_ROUTING_KEY_SOURCE, id="pagerduty source without routing_key auth"),
    pytest.param("sources:\n  am:\n    format: alertmanager\n    auth: {type: routing_key, routing_key_env: KEY}\n",
                 4, "sources.am.auth", NOT_A_ROUTING_KEY_SOURCE, id="routing_key auth on another format"),
    pytest.param("sources:\n  am:\n    format: nagios\n    auth: {type: bearer, token_env: AM_TOKEN}\n",
                 3, "sources.am.format", "Input should be 'alertmanager', 'grafana', 'pagerduty' or 'generic'",
                 id="unknown format"),
    pytest.param("sources:\n  am:\n    format: alertmanager\n    auth: {type: bearer, token_env: AM_TOKEN}\n"
                 "    descripton: typo\n",
                 5, "sources.am.descripton", "unknown field", id="unknown field"),
    pytest.param("sources:\n  generic:\n    format: generic\n    auth:\n      type: hmac\n      secret_env: HMAC\n"
                 "      replay_window_seconds: 0\n",
                 7, "sources.generic.auth.replay_window_seconds", "Input should be greater than or equal to 1",
                 id="hmac replay window"),
    pytest.param("sources:\n  Chat Monitor:\n    format: generic\n    auth: {type: hmac, secret_env: HMAC}\n",
                 2, "sources.Chat Monitor", "'Chat Monitor' must match ^[a-z0-9][a-z0-9_-]{0,59}$",
                 id="bad source name"),
    pytest.param("sources:\n  am:\n    format: alertmanager\n    auth: {type: bearer, token_env: A}\n"
                 "  am:\n    format: grafana\n    auth: {type: bearer, token_env: B}\n",
                 5, "sources.am", "duplicate key 'am' (first on line 2)", id="duplicate key"),
    pytest.param("", 1, "sources", "required field is missing", id="empty file"),
])
def test_problem_is_named_by_file_line_and_field(tmp_path: Path, text: str, line: int, field: str,
                                                 message: str) -> None:
    path, problems = problems_in(tmp_path, text)
    assert problems == f"{path}:{line}: {field}: {message}"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path, problems = problems_in(tmp_path, "sources:\n  am:\n    format: alertmanager\n    auth: {type: bearer\n")
    assert problems.startswith(f"{path}:5: (file): YAML syntax error: ")
    assert len(problems.splitlines()) == 1


@pytest.mark.parametrize("secret_key", ["token", "secret", "routing_key"])
def test_inline_secret_is_refused_without_repeating_it(tmp_path: Path, secret_key: str) -> None:
    secret = "hunter2-0123456789abcdef"
    path, problems = problems_in(
        tmp_path, f"sources:\n  am:\n    format: alertmanager\n    auth:\n      type: bearer\n"
                  f"      token_env: AM_TOKEN\n      {secret_key}: {secret}\n")
    assert problems == (f"{path}:7: sources.am.auth.{secret_key}: secrets are not written in this file; "
                        "name the environment variable that holds it (…_env)")
    assert secret not in problems


def test_secret_written_where_its_variable_name_belongs_is_not_repeated(tmp_path: Path) -> None:
    secret = "s3cr3t-token-value"
    path, problems = problems_in(
        tmp_path, f"sources:\n  am:\n    format: alertmanager\n    auth:\n      type: bearer\n      token_env: {secret}\n")
    assert problems == (f"{path}:6: sources.am.auth.token_env: must be the name of an environment variable "
                        f"({ENV_NAME}); the value is not shown")
    assert secret not in problems


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    path, problems = problems_in(
        tmp_path, "sources:\n  am:\n    format: alertmanager\n    auth: {type: bearer}\n"
                  "  pd:\n    format: pagerduty\n    auth: {type: hmac, secret_env: lower}\n")
    assert problems.splitlines() == [
        f"{path}:4: sources.am.auth.token_env: required field is missing",
        f"{path}:7: sources.pd.auth.secret_env: must be the name of an environment variable ({ENV_NAME}); "
        "the value is not shown",
    ]


def test_shipped_sources_file_loads() -> None:
    sources = load_sources(INTAKE_DIR / "sources.yaml")
    assert {name: (s.format, type(s.auth)) for name, s in sources.items()} == {
        "alertmanager": ("alertmanager", BearerAuth), "grafana": ("grafana", BearerAuth),
        "pagerduty": ("pagerduty", RoutingKeyAuth), "generic": ("generic", HmacAuth)}


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(SourcesInvalid) as caught:
        load_sources(path)
    assert str(caught.value).startswith(f"{path}:1: (file): cannot read file: ")
