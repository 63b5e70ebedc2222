"""Check runbooks without running them: every problem names file, line and field.

On top of the schema: actions exist and get only the arguments they take;
`needs` name real steps and form no cycle; templates parse and use only declared
parameters, known context names and the outputs of steps they depend on; roles
are known and declared.
"""
from __future__ import annotations

import re
from pathlib import Path
import json
from typing import Annotated, Any

from jinja2 import TemplateSyntaxError
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from notifications.roles import ROLES
from runbooks.loader import LoadedRunbook, RunbookInvalid, RunbookProblem, load_runbook
from runbooks.schema import PARAM_NAME, Runbook
from runbooks.templating import CONTEXT_NAMES, ENV, is_template, parse, references
from tasks.catalog import ACTIONS

Path_ = tuple[str | int, ...]
TEMPLATE_PART = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def runbook_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml")))
        else:
            files.append(path)
    return files


def validate_file(path: Path) -> tuple[LoadedRunbook | None, list[RunbookProblem]]:
    try:
        loaded = load_runbook(path)
    except RunbookInvalid as exc:
        return None, exc.problems
    return loaded, check(loaded)


def load_valid(path: Path) -> LoadedRunbook:
    """Load a runbook for running; any problem raises RunbookInvalid."""
    loaded, problems = validate_file(path)
    if problems or loaded is None:
        raise RunbookInvalid(problems)
    return loaded


def check(loaded: LoadedRunbook) -> list[RunbookProblem]:
    runbook = loaded.runbook
    problems: list[RunbookProblem] = []

    def problem(at: Path_, message: str) -> None:
        problems.append(loaded.problem(at, message))

    for name in runbook.parameters:
        if not re.match(PARAM_NAME, name):
            problem(("parameters", name), f"parameter name {name!r} must match {PARAM_NAME}")

    for index, role in enumerate(runbook.roles):
        if role not in ROLES:
            problem(("roles", index), f"unknown role {role!r}; expected one of {', '.join(sorted(ROLES))}")

    for index, rule in enumerate(runbook.level.rules):
        _check_template(rule.when, ("level", "rules", index, "when"), runbook, set(), problem, expression=True,
                        allowed={"params"})

    step_index: dict[str, int] = {}
    for index, step in enumerate(runbook.steps):
        if step.id in step_index:
            problem(("steps", index, "id"), f"duplicate step id {step.id!r} (also steps[{step_index[step.id]}])")
        else:
            step_index[step.id] = index

    for index, step in enumerate(runbook.steps):
        for n, need in enumerate(step.needs):
            if need == step.id:
                problem(("steps", index, "needs", n), "a step cannot need itself")
            elif need not in step_index:
                problem(("steps", index, "needs", n), f"unknown step {need!r}; steps are {', '.join(step_index)}")
        for n, role in enumerate(step.escalate_to):
            _check_role(role, runbook, ("steps", index, "escalate_to", n), problem)

    cycle = _find_cycle(runbook, step_index)
    if cycle:
        first = step_index[cycle[0]]
        problem(("steps", first, "needs"), "needs form a cycle: " + " → ".join(cycle + [cycle[0]]))
        return problems  # upstream sets are meaningless with a cycle

    upstream = _upstream(runbook)
    for index, step in enumerate(runbook.steps):
        at: Path_ = ("steps", index)
        known = upstream[step.id]
        if step.when is not None:
            _check_template(step.when, at + ("when",), runbook, known, problem, expression=True)
        spec = ACTIONS.get(step.action)
        if spec is None:
            problem(at + ("action",), f"unknown action {step.action!r}; expected one of {', '.join(sorted(ACTIONS))}")
            continue
        _check_arguments(step.with_, spec, at + ("with",), runbook, known, problem)
        if step.action == "notify" and isinstance(step.with_.get("to"), list):
            for n, role in enumerate(step.with_["to"]):
                if isinstance(role, str) and not is_template(role):
                    _check_role(role, runbook, at + ("with", "to", n), problem)
        if step.action == "notify":
            _check_notify(step, at, problem)
    _check_commitments(runbook, step_index, problem)
    return problems


def _check_notify(step: Any, at: Path_, problem: Any) -> None:
    """The message event and escalation policy a notify step names exist (issue 3)."""
    from firebreak.settings import get_settings
    from notifications.escalation import EscalationInvalid, load_policies
    from notifications.messages import EVENTS

    event = step.with_.get("event")
    if isinstance(event, str) and not is_template(event) and event not in EVENTS:
        problem(at + ("with", "event"), f"unknown message event {event!r}; expected one of {', '.join(EVENTS)}")
    if "to" not in step.with_ and step.with_.get("by_level") is not True:
        problem(at + ("with",), "notify needs `to` (roles) or `by_level: true`")
    name = step.with_.get("escalation")
    if not isinstance(name, str) or is_template(name):
        return
    try:
        policies = load_policies(get_settings().escalation_file)
    except EscalationInvalid as exc:
        problem(at + ("with", "escalation"), f"escalation policies cannot be read: {exc}")
        return
    policy = policies.get(name)
    if policy is None:
        problem(at + ("with", "escalation"), f"unknown escalation policy {name!r}; defined: {', '.join(policies)}")
    elif step.timeout * (step.retries + 1) < policy.total_seconds():
        # Each retry resumes the escalation where the last attempt stopped, so the attempts together
        # must be able to outlast it.
        problem(at + ("timeout",), f"timeout {step.timeout:g}s × {step.retries + 1} attempt(s) is shorter than "
                                   f"escalation policy {name!r} ({policy.total_seconds():g}s in all); escalation "
                                   f"runs inside the step")


def _check_commitments(runbook: Runbook, step_index: dict[str, int], problem: Any) -> None:
    from reports.commitments import CATALOGUE

    for index, ref in enumerate(runbook.commitments):
        at: Path_ = ("commitments", index)
        commitment = CATALOGUE.get(ref.id)
        if commitment is None:
            problem(at + ("id",), f"unknown commitment {ref.id!r}; expected one of {', '.join(CATALOGUE)}")
            continue
        if commitment.needs_evidence and not ref.evidence:
            problem(at, f"commitment {ref.id!r} needs evidence: the step id(s) whose records measure it")
        for n, step_id in enumerate(ref.evidence):
            if step_id not in step_index:
                problem(at + ("evidence", n), f"unknown step {step_id!r}; steps are {', '.join(step_index)}")


def _check_role(role: str, runbook: Runbook, at: Path_, problem: Any) -> None:
    if role not in ROLES:
        problem(at, f"unknown role {role!r}; expected one of {', '.join(sorted(ROLES))}")
    elif role not in runbook.roles:
        problem(at, f"role {role!r} is not declared in the runbook's roles ({', '.join(runbook.roles)})")


def _check_arguments(arguments: dict[str, Any], spec: Any, at: Path_, runbook: Runbook, known: set[str],
                     problem: Any) -> None:
    fields = spec.input_model.model_fields
    accepted = {name: name for name in fields} | {f.alias: name for name, f in fields.items() if f.alias}
    for name, value in arguments.items():
        if name not in accepted:
            takes = ", ".join(sorted(f.alias or n for n, f in fields.items()))
            problem(at + (name,), f"action {spec.name!r} takes no argument {name!r}; it takes {takes}")
            continue
        if accepted[name] in spec.expression_fields and isinstance(value, str) and "{%" not in value:
            # `{{ }}` parts are filled in first; the expression around them is
            # evaluated by the action with its own names.
            _walk_templates(value, at + (name,), runbook, known, problem)
            _check_template(TEMPLATE_PART.sub("0", value), at + (name,), runbook, known, problem, expression=True,
                            allowed=set(spec.expression_fields[accepted[name]]))
        else:
            _walk_templates(value, at + (name,), runbook, known, problem)
            _check_value(value, fields[accepted[name]], spec.name, at + (name,), problem)
    given = {accepted[n] for n in arguments if n in accepted}
    for name, field in fields.items():
        if field.is_required() and name not in given:
            problem(at, f"action {spec.name!r} needs argument {field.alias or name!r}")


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def _check_value(value: Any, field: FieldInfo, action: str, at: Path_, problem: Any) -> None:
    """Type-check an argument now when it holds no template (templated ones are checked at run time)."""
    if _has_template(value):
        return
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        problem(at, f"invalid value for {action!r}{where}: {first['msg']} (got {json.dumps(value, default=str)})")


def _walk_templates(value: Any, at: Path_, runbook: Runbook, known: set[str], problem: Any) -> None:
    if isinstance(value, str):
        if is_template(value):
            _check_template(value, at, runbook, known, problem, expression=False)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_templates(item, at + (key,), runbook, known, problem)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _walk_templates(item, at + (n,), runbook, known, problem)


def _check_template(source: str, at: Path_, runbook: Runbook, known: set[str], problem: Any, *,
                    expression: bool, allowed: set[str] | None = None) -> None:
    if expression and "{{" in source:
        problem(at, "write a bare expression here, without {{ }} (e.g. level == 'I')")
        return
    try:
        tree = parse(source, expression=expression)
    except TemplateSyntaxError as exc:
        message = (exc.message or "").replace("end of print statement", "end of the expression")
        problem(at, f"{'expression' if expression else 'template'} syntax error: {message}")
        return
    names, attributes = references(tree)
    allowed_names = set(CONTEXT_NAMES) if allowed is None else allowed
    for name in sorted(names - allowed_names - set(ENV.globals)):
        problem(at, f"template uses undefined name {name!r}; available: {', '.join(sorted(allowed_names))}")
    for root, attribute in sorted(attributes):
        if root == "params" and "params" in allowed_names and attribute not in runbook.parameters:
            declared = ", ".join(runbook.parameters) or "none"
            problem(at, f"template uses undeclared parameter {attribute!r} (declared: {declared})")
        elif root == "steps" and "steps" in allowed_names and attribute not in known:
            problem(at, f"template reads steps.{attribute}, which is not a step this one needs (directly or "
                        f"indirectly); add it to needs")


def _find_cycle(runbook: Runbook, step_index: dict[str, int]) -> list[str] | None:
    graph = {step.id: [n for n in step.needs if n in step_index and n != step.id] for step in runbook.steps}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for step in runbook.steps:
        if step.id not in state:
            found = visit(step.id)
            if found:
                return found
    return None


def _upstream(runbook: Runbook) -> dict[str, set[str]]:
    """Every step each step depends on, directly or through other steps."""
    ids = {step.id for step in runbook.steps}
    direct = {step.id: {n for n in step.needs if n in ids and n != step.id} for step in runbook.steps}
    result: dict[str, set[str]] = {}

    def collect(step_id: str) -> set[str]:
        if step_id not in result:
            found: set[str] = set()
            for need in direct.get(step_id, ()):
                found |= {need} | collect(need)
            result[step_id] = found
        return result[step_id]

    for step in runbook.steps:
        collect(step.id)
    return result
