"""`firebreak`: the command line. Heavy modules (Prefect, the engine) are imported
only by the commands that need them, after the Prefect server is chosen."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from firebreak.errors import ConfigInvalid, FirebreakError, InputInvalid, NotFound
from firebreak.settings import get_settings

SIMULATED_FAULT = {"system-outage": "down", "network-congestion": "congested", "staffing-shortage": "short-staffed"}


def cmd_validate(args: argparse.Namespace) -> int:
    from runbooks.validate import runbook_files
    from tasks.catalog import validate_file

    paths = [Path(p) for p in args.paths] or [get_settings().runbooks_dir]
    files = runbook_files(paths)
    if not files:
        print(f"no runbook files found in {', '.join(map(str, paths))}", file=sys.stderr)
        return 2
    failed = 0
    for path in files:
        _, problems = validate_file(path)
        if problems:
            failed += 1
            for problem in problems:
                print(problem, file=sys.stderr)
        else:
            print(f"{path}: ok")
    if failed:
        print(f"{failed} of {len(files)} runbook(s) invalid", file=sys.stderr)
    return 1 if failed else 0


def cmd_drill(args: argparse.Namespace) -> int:
    from firebreak.cli.drill import run_drill

    return run_drill(args.runbook, level=args.level, fault=args.fault, quick=not args.real_time)


def cmd_run(args: argparse.Namespace) -> int:
    from firebreak.cli.prefect_server import ensure_server

    parameters = dict(_parse_assignment(a) for a in args.param)
    _check_run_request(args.runbook, parameters)  # before a Prefect server is chosen or a run created
    ensure_server()
    from firebreak.cli.drill import print_record
    from flows.engine import run_runbook
    from flows.forms import StartedBy

    try:
        summary = run_runbook(runbook=args.runbook, parameters=parameters, level=args.level, source=StartedBy.cli,
                              summary=args.summary)
    except Exception as exc:  # noqa: BLE001  the run raises whatever its flow raised: one line and exit 1, no traceback
        print(f"run failed: {exc}", file=sys.stderr)
        return 1
    print_record(summary.incident_id)
    return 0


def _parse_assignment(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise InputInvalid(f"--param expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise InputInvalid(f"--param {name}: the value is read as YAML and {value!r} is not valid YAML ({problem})") from None


def _check_run_request(runbook: str, parameters: dict[str, object]) -> None:
    """Refuse a misspelt runbook, or parameters it does not declare or accept, before anything
    starts (the engine checks again in the run). Reads only the file: no Prefect import here,
    because Prefect fixes its settings when first imported and ensure_server has not run yet."""
    from pydantic import ValidationError

    from runbooks import library
    from runbooks.loader import load_runbook

    path, _mtime = library.find(runbook)  # RunbookNotFound
    declared = load_runbook(path).runbook  # RunbookInvalid: the file's located problems
    try:
        library.parameter_model(declared).model_validate(parameters)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(parameters)'}: "
                             f"{'unknown parameter' if e['type'] == 'extra_forbidden' else e['msg']}"
                             for e in exc.errors())
        known = ", ".join(declared.parameters) or "none"
        raise InputInvalid(f"parameters rejected by runbook {declared.id}: {problems} "
                           f"(its parameters: {known})") from None


def cmd_incidents(args: argparse.Namespace) -> int:
    from records.incidents import list_incidents

    for incident in list_incidents(args.limit):
        # Open with no run driving it (records.models.Incident.attention_reason): said on its own line.
        attention = f"\n    NEEDS ATTENTION: {incident.attention_reason}" if incident.needs_attention else ""
        print(f"{incident.id}  {incident.runbook_id:<20} level {incident.level:<3} {incident.status:<12} "
              f"run {incident.run_state:<10} {'drill ' if incident.drill else ''}{incident.created_at:%Y-%m-%d %H:%M:%S}Z"
              f"{attention}")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from firebreak.cli.drill import print_record

    print_record(args.incident)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    import os

    if not os.environ.get("PREFECT_API_URL"):
        from firebreak.cli.prefect_server import ensure_server

        ensure_server()
    # A configured server that does not answer: reconcile says so and judges nothing (PrefectUnreachable).
    from flows.reconcile import reconcile_runs

    done = reconcile_runs()
    for item in done:
        print(f"{item.incident_id}: run {item.run_state.value} ({item.reason})")
    print(f"{len(done)} run(s) reconciled")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from firebreak.cli.prefect_server import ensure_server, healthy, stop_local_server

    if args.action == "start":
        server = ensure_server()
        print(f"Prefect UI: {server.ui_url}")
    elif args.action == "stop":
        print("stopped" if stop_local_server() else "no local server was started by firebreak")
    else:
        from firebreak.cli.prefect_server import own_server_state

        state = own_server_state()
        url = str(state["api_url"]) if state else f"http://127.0.0.1:{get_settings().prefect_port}/api"
        whose = f"this checkout's (pid {state['pid']})" if state else "not started by firebreak"
        print(f"{url}: {'healthy' if healthy(url) else 'not running'}; {whose}")
    return 0


def cmd_simulator(args: argparse.Namespace) -> int:
    from simulator.__main__ import main as simulator_main

    return simulator_main(["--host", args.host, "--port", str(args.port), "--fault", args.fault]) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firebreak", description="Incident-response runbooks as Prefect flows.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check runbook files without running them")
    p.add_argument("paths", nargs="*", help="files or directories (default: the runbooks directory)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("drill", help="run a runbook against the local simulator with a fault injected")
    p.add_argument("runbook", choices=sorted(SIMULATED_FAULT))
    p.add_argument("--level", choices=["I", "II", "III"])
    p.add_argument("--fault", choices=["none", "down", "congested", "short-staffed", "flapping", "unreachable"],
                   help="default: the runbook's own fault; `unreachable`: the service refuses connections")
    p.add_argument("--real-time", action="store_true", help="use the runbook's own check intervals")
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("run", help="run a runbook for real")
    p.add_argument("runbook")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--level", choices=["I", "II", "III"])
    p.add_argument("--summary")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("incidents", help="list incidents")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=cmd_incidents)

    p = sub.add_parser("timeline", help="show an incident's timeline and notifications")
    p.add_argument("incident")
    p.set_defaults(func=cmd_timeline)

    p = sub.add_parser("reconcile", help="record runs Prefect reports Running whose heartbeat stopped as crashed "
                                         "(waiting runs are left alone)")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("server", help="the local Prefect server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("simulator", help="serve the contact-centre simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=get_settings().simulator_port)
    p.add_argument("--fault", default="none")
    p.set_defaults(func=cmd_simulator)

    from firebreak.cli.commands import register_all

    register_all(sub)
    return parser


#: Mistakes in what was asked for (the command line, a config or runbook file): exit 2, as argparse does.
USAGE_MISTAKES = (ConfigInvalid, InputInvalid, NotFound)


def entry() -> int:
    """The `firebreak` process: the console script and `python -m firebreak` (main() is also called in-process)."""
    # Ctrl-C (SIGINT, which `firebreak up` also uses to stop its children) must stop every command, even one
    # started with SIGINT ignored, as a shell script's `&` job is: Python then installs no KeyboardInterrupt
    # handler of its own, and `firebreak serve-deployments` started so went on serving after SIGINT. Here, not in
    # main(): a caller's own process (a test's thread) keeps its handlers.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return main()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FirebreakError as exc:
        return report_error(exc)


def report_error(exc: FirebreakError) -> int:
    """Print `exc` to stderr as one line (a file's problems: one located line each), never a
    traceback; the exit code: 2 for a usage or configuration mistake, 1 otherwise."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    for line in lines or [(exc.__doc__ or type(exc).__name__).strip().splitlines()[0]]:
        print(f"error: {line}", file=sys.stderr)
    return 2 if isinstance(exc, USAGE_MISTAKES) else 1


if __name__ == "__main__":
    sys.exit(main())
