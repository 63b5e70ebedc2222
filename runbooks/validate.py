"""Check runbooks without running them: every problem names file, line and field.

On top of the schema: actions exist and get only the arguments they take;
`needs` name real steps and form no cycle; templates parse and use only declared
parameters, known context names and the outputs of steps they depend on; roles
are known and declared; commitments are in the catalogue.

The actions are given, never imported: the caller passes the action catalogue
(tasks.catalog binds it), a mapping of action name to its signature. An action
with checks of its own beyond its arguments (notify: its message event and
escalation policy exist) brings them as its `check_step` hook.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Protocol

from jinja2 import TemplateSyntaxError
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from firebreak.yaml_lines import Path_
from runbooks.commitments import CATALOGUE
from runbooks.hosts import WRITTEN_ORIGIN, url_problem
from runbooks.loader import LoadedRunbook, RunbookInvalid, RunbookProblem, load_runbook
from runbooks.roles import ROLES
from runbooks.schema import PARAM_NAME, Runbook, Step
from runbooks.templating import CONTEXT_NAMES, ENV, is_template, parse, references

TEMPLATE_PART = re.compile(r"\{\{.*?\}\}", re.DOTALL)

#: Reports a problem: where in the runbook (e.g. ("steps", 2, "with", "to")), and what.
Report = Callable[[Path_, str], None]
#: An action's own checks of a step that names it: (step, where the step is, runbook, report).
StepCheck = Callable[[Step, Path_, Runbook, Report], None]


class ActionSignature(Protocol):
    """What the validator needs of an action (tasks.base.Action has it)."""

    @property
    def name(self) -> str: ...

    @property
    def input_model(self) -> type[BaseModel]: ...

    @property
    def expression_fields(self) -> Mapping[str, frozenset[str]]: ...

    @property
    def check_step(self) -> StepCheck | None: ...


#: Action name → signature: the catalogue runbooks are checked against.
Actions = Mapping[str, ActionSignature]


def runbook_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.y*ml") if p.suffix in (".yaml", ".yml")))
        else:
            files.append(path)
    return files


def validate_file(path: Path, actions: Actions) -> tuple[LoadedRunbook | None, list[RunbookProblem]]:
    try:
        loaded = load_runbook(path)
    except RunbookInvalid as exc:
        return None, exc.problems
    return loaded, check(loaded, actions)


def load_valid(path: Path, actions: Actions) -> LoadedRunbook:
    """Load a runbook for running; any problem raises RunbookInvalid."""
    loaded, problems = validate_file(path, actions)
    if problems or loaded is None:
        raise RunbookInvalid(problems)
    return loaded


def check(loaded: LoadedRunbook, actions: Actions) -> list[RunbookProblem]:
    runbook = loaded.runbook
    problems: list[RunbookProblem] = []

    def problem(at: Path_, message: str) -> None:
        problems.append(loaded.problem(at, message))

    for name in runbook.parameters:
        if not re.match(PARAM_NAME, name):
            problem(("parameters", name), f"parameter name {name!r} must match {PARAM_NAME}")
    _check_url_parameters(runbook, problem)

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
            check_role(role, runbook, ("steps", index, "escalate_to", n), problem)
    _check_run_failure(runbook, actions, problem)

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
        spec = actions.get(step.action)
        if spec is None:
            problem(at + ("action",), f"unknown action {step.action!r}; expected one of {', '.join(sorted(actions))}")
            continue
        _check_arguments(step.with_, spec, at + ("with",), runbook, known, problem)
        if spec.check_step is not None:
            spec.check_step(step, at, runbook, problem)
    _check_commitments(runbook, step_index, problem)
    _check_chinese_twins(runbook, problem)
    return problems


def _check_chinese_twins(runbook: Runbook, problem: Report) -> None:
    """A runbook that carries one Chinese twin (`title_zh`, `description_zh`, a step's, a notify step's
    `title_zh`/`message_zh`, an approval's `action_zh`/`reason_zh`, a record's `message_zh`) carries them
    all, so a Chinese report or page is never half English."""
    if not runbook.has_zh and not any(isinstance(s.with_.get("title_zh"), str) for s in runbook.steps):
        return
    missing = " (a runbook with any Chinese twin must have all of them)"
    if not runbook.title_zh:
        problem(("title",), "title_zh is missing" + missing)
    if not runbook.description_zh:
        problem(("description",), "description_zh is missing" + missing)
    for index, step in enumerate(runbook.steps):
        if not step.title_zh:
            problem(("steps", index, "id"), f"step {step.id!r} has no title_zh" + missing)
        if step.description and not step.description_zh:
            problem(("steps", index, "description"), f"step {step.id!r} has a description but no description_zh"
                    + missing)
        # What a person reads: a page's title and text, a gate's question to its approvers (tasks.approval),
        # and a note on the timeline (tasks.note: the Chinese report prints `message_zh`).
        for action, names in (("notify", ("title", "message")), ("approval", ("action", "reason")),
                              ("record", ("message",))):
            if step.action != action:
                continue
            for name in names:
                if name in step.with_ and f"{name}_zh" not in step.with_:
                    problem(("steps", index, "with", name), f"{action} step {step.id!r} has `{name}` but no "
                                                            f"`{name}_zh`" + missing)


#: A step argument that starts with a parameter, or puts one right after the scheme: that parameter is a URL base.
_URL_FROM_PARAM = re.compile(r"^\s*\{\{\s*params\.([a-z][a-z0-9_]*)|://\s*\{\{\s*params\.([a-z][a-z0-9_]*)")


def _check_url_parameters(runbook: Runbook, problem: Report) -> None:
    """URL parameters are declared `format: url`, and their defaults are allowed hosts (runbooks.hosts):
    otherwise whoever sets the parameter (an alert, through a route that copies its labels) chooses
    where the runbook's requests go."""
    for name, parameter in runbook.parameters.items():
        if parameter.format == "url" and isinstance(parameter.default, str):
            reason = url_problem(parameter.default, runbook.allowed_hosts)
            if reason:
                problem(("parameters", name, "default"), f"default URL {reason}; add its host to allowed_hosts")
    for index, step in enumerate(runbook.steps):
        value = step.with_.get("url")
        if not isinstance(value, str):
            continue
        if not is_template(value) or not _parses(value):  # a syntax error is reported on its own
            continue
        match = _URL_FROM_PARAM.search(value)
        if match is None:
            reason = _host_not_fixed(value)
            if reason is not None:
                problem(("steps", index, "with", "url"), reason)
            continue
        name = match.group(1) or match.group(2)
        declared = runbook.parameters.get(name)
        if declared is not None and (match.group(2) or declared.format != "url"):
            problem(("steps", index, "with", "url"),
                    f"the URL's host comes from parameter {name!r}: declare it `format: url` and build the URL "
                    f"as \"{{{{ params.{name} }}}}/path\", so its host is checked against allowed_hosts")
            continue
        reason = _host_not_fixed(value)
        if reason is not None:
            problem(("steps", index, "with", "url"), reason)


#: A URL that starts with one URL parameter on its own, and what comes after it.
_PARAMETER_BASE = re.compile(r"^\s*\{\{\s*params\.([a-z][a-z0-9_]*)\s*\}\}(?P<rest>.*)$", re.DOTALL)


def _host_not_fixed(url: str) -> str | None:
    """Why a templated URL lets a template decide its host, or None. The host a request goes to must
    be either a `format: url` parameter's (checked against allowed_hosts wherever it is set) or written
    in the runbook: `{{ params.service_url }}{{ params.path }}` with path `@evil.example` would
    request evil.example, and so would `http://127.0.0.1{{ params.x }}/` with x `.evil.example`."""
    base = _PARAMETER_BASE.match(url)
    if base is not None:
        rest = base["rest"]
        if rest == "" or rest.startswith("/"):
            return None
        return (f"only a `/` may follow {{{{ params.{base.group(1)} }}}} in a URL: what follows it here "
                f"({rest[:30]!r}) would be part of the host or port, outside what allowed_hosts checked")
    first = min(at for at in (url.find("{{"), url.find("{%")) if at >= 0)
    if WRITTEN_ORIGIN.match(url[:first]):
        return None
    return ("the URL's host is made by a template, so whoever sets its values chooses where the request goes: "
            "start the URL with a `format: url` parameter (\"{{ params.service_url }}/path\") or write the "
            "scheme and host out, up to the first `/`, before any template")


def _parses(template: str) -> bool:
    try:
        parse(template, expression=False)
    except TemplateSyntaxError:
        return False
    return True


def _check_run_failure(runbook: Runbook, actions: Actions, problem: Report) -> None:
    """`on_run_failure` is a page like a notify step's: its roles are known and declared, and its
    escalation policy exists (checked by the notify action's own checks, given the page as a step)."""
    paging = runbook.on_run_failure
    if paging is None:
        return
    for n, role in enumerate(paging.notify):
        check_role(role, runbook, ("on_run_failure", "notify", n), problem)
    notify = actions.get("notify")
    if paging.escalation is None or notify is None or notify.check_step is None:
        return
    page = Step.model_validate({"id": "on_run_failure", "action": "notify", "timeout": 86400,
                                "with": {"by_level": True, "escalation": paging.escalation}})

    def escalation_problem(at: Path_, message: str) -> None:
        if at[-1] == "escalation":  # the alarm's time is set from the policy, so only its name is checked
            problem(("on_run_failure", "escalation"), message)

    notify.check_step(page, ("on_run_failure",), runbook, escalation_problem)


def _check_commitments(runbook: Runbook, step_index: dict[str, int], problem: Report) -> None:
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


def check_role(role: str, runbook: Runbook, at: Path_, problem: Report) -> None:
    """The role is a known one (runbooks.roles) and the runbook declares it in `roles:`."""
    if role not in ROLES:
        problem(at, f"unknown role {role!r}; expected one of {', '.join(sorted(ROLES))}")
    elif role not in runbook.roles:
        problem(at, f"role {role!r} is not declared in the runbook's roles ({', '.join(runbook.roles)})")


def _check_arguments(arguments: dict[str, Any], spec: ActionSignature, at: Path_, runbook: Runbook, known: set[str],
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
    # Any: a type form (a class, a union, an Annotated[…]), which TypeAdapter takes and mypy cannot name.
    annotation: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
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
