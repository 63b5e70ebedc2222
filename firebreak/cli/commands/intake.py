"""`firebreak serve` (the intake HTTP service) and `firebreak up` (the whole local stack).

`up` starts, each as its own process so one crash is visible and Ctrl-C stops
them all: the Prefect server (or uses PREFECT_API_URL), the deployments from
prefect.yaml served by a runner (which runs what operators start from the
Prefect UI, and reconcile every minute on its schedule), the intake (which runs
alert-started runs itself, warm) and, with --with-simulator, the contact-centre
simulator.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from firebreak.settings import PROJECT_ROOT, get_settings

#: How often the deployment runner looks for runs started in the UI (Prefect's default is 10 s).
RUNNER_POLL_SECONDS = "1"


def cmd_serve(args: argparse.Namespace) -> int:
    from intake.settings import IntakeSettings

    overrides: dict[str, Any] = {"host": args.host, "port": args.port, "executor": args.executor,
                                 "workers": args.workers, "certfile": args.certfile, "keyfile": args.keyfile}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    # Worker processes read their settings from the environment, so the flags go there too.
    os.environ.update({f"FIREBREAK_INTAKE_{k.upper()}": str(v) for k, v in overrides.items()})
    settings = IntakeSettings(**overrides)
    check_tls(settings)
    from intake.connection_budget import enforce

    # Before anything connects: refuse a configuration over the connection budget; size the pool.
    print(enforce("intake", intake=settings), flush=True)
    if settings.executor != "none" and not os.environ.get("PREFECT_API_URL"):
        from firebreak.cli.prefect_server import ensure_server

        ensure_server()  # before Prefect is imported by the intake, so runs report there
    # A configured Prefect server is used as it is, even while it is down: alerts are accepted, and
    # their runs wait in the outbox until it answers.
    from intake.server import serve

    serve(settings)
    return 0


def check_tls(settings: Any) -> None:
    """Both or neither of the certificate and its key, each a readable file: else one line, exit 2."""
    from firebreak.errors import ConfigInvalid

    if (settings.certfile is None) != (settings.keyfile is None):
        raise ConfigInvalid("TLS needs both --certfile and --keyfile (FIREBREAK_INTAKE_CERTFILE, "
                            "FIREBREAK_INTAKE_KEYFILE), not one of them")
    for flag, path in (("--certfile", settings.certfile), ("--keyfile", settings.keyfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigInvalid(f"{flag} {path}: no such file")


def load_deployments(project_file: Path = PROJECT_ROOT / "prefect.yaml") -> list[Any]:
    """The deployments declared in prefect.yaml, as RunnerDeployments for `prefect.serve`."""
    import yaml
    from prefect.deployments.runner import RunnerDeployment

    declared = yaml.safe_load(project_file.read_text())["deployments"]
    # From the entrypoint as written (file:attribute), not flow.to_deployment(): the seed entry
    # flows are built by a factory, so their function's qualified name is not importable.
    return [RunnerDeployment.from_entrypoint(
        entrypoint=str(project_file.parent / entry["entrypoint"]), name=entry["name"],
        description=entry.get("description"), tags=entry.get("tags"),
        enforce_parameter_schema=entry.get("enforce_parameter_schema", True), **_schedules(entry))
        for entry in declared]


def _schedules(entry: dict[str, Any]) -> dict[str, Any]:
    """A deployment's `schedules:` (interval or cron entries, as `prefect deploy` reads them) for serve()."""
    active = [s for s in entry.get("schedules") or [] if s.get("active", True)]
    for kind in ("interval", "cron"):
        values = [s[kind] for s in active if kind in s]
        if values:
            return {kind: values}
    return {}


def cmd_serve_deployments(args: argparse.Namespace) -> int:
    from firebreak.cli.prefect_server import ensure_server

    ensure_server()
    from prefect import serve

    deployments = load_deployments()
    print(f"serving {len(deployments)} deployments: {', '.join(d.name for d in deployments)}", flush=True)
    serve(*deployments, print_starting_message=False)
    return 0


def _child(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    firebreak = Path(sys.executable).with_name("firebreak")
    command = [str(firebreak)] if firebreak.exists() else [sys.executable, "-m", "firebreak"]
    # Own process group: a terminal's Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(command + argv, env=env, cwd=PROJECT_ROOT, start_new_session=True)


def _stop(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _name, child in reversed(children):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGINT)
    deadline = time.monotonic() + 15
    for name, child in reversed(children):
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; terminating it", flush=True)
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=10)


def cmd_up(args: argparse.Namespace) -> int:
    if getattr(args, "layout", "local") == "production":
        from firebreak.cli.production_layout import cmd_up_production

        return cmd_up_production(args)
    from firebreak.cli import stack
    from firebreak.cli.prefect_server import ensure_server, stop_local_server
    from intake.settings import IntakeSettings

    running = {name: pid for name, pid in stack.recorded().items() if stack._alive(pid)}
    if stack.UP in running:
        print(f"error: `firebreak up` already runs for this checkout (pid {running[stack.UP]}); "
              "`firebreak down` stops it", file=sys.stderr)
        return 1
    server = ensure_server(args.prefect_port)  # ForeignServer: one line, nothing started
    # --intake-port (registered with the production layout's options, default 8700); unchanged, the
    # intake's own settings decide (FIREBREAK_INTAKE_PORT, else 8700).
    given = getattr(args, "intake_port", None)
    intake_settings = IntakeSettings(**({"port": given} if given and given != 8700 else {}))
    simulator_port = args.simulator_port or get_settings().simulator_port
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_RUNNER_POLL_FREQUENCY": RUNNER_POLL_SECONDS,
           "FIREBREAK_INTAKE_PORT": str(intake_settings.port), "FIREBREAK_SIMULATOR_PORT": str(simulator_port)}
    # Acknowledgement links in pages point at this intake, wherever it listens (unless configured).
    env.setdefault("FIREBREAK_PUBLIC_URL", f"http://{intake_settings.host}:{intake_settings.port}")
    stack.record(stack.UP, os.getpid())
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.with_simulator:
            port = simulator_port
            # The demo contacts' channels point at ${FIREBREAK_INBOX}: the simulator's inbox (as in drills).
            env.setdefault("FIREBREAK_INBOX", f"127.0.0.1:{port}")
            if "FIREBREAK_SERVICES_FILE" not in os.environ:  # the forms' service URL: this simulator's port
                env["FIREBREAK_SERVICES_FILE"] = str(_simulator_services(port))
            children.append(("simulator", _child(["simulator", "--port", str(port)], env)))
        children.append(("deployments", _child(["serve-deployments"], env)))
        children.append(("intake", _child(["serve", "--executor", args.executor,
                                           "--port", str(intake_settings.port)], env)))
        for name, child in children:
            stack.record(name, child.pid)
        print()
        print(f"Prefect UI:   {server.ui_url}   (deployments: {server.ui_url}/deployments)")
        print(f"intake:       http://{intake_settings.host}:{intake_settings.port}   "
              f"(API docs: http://{intake_settings.host}:{intake_settings.port}/docs, with a read token)")
        if args.with_simulator:
            print(f"simulator:    http://127.0.0.1:{simulator_port}")
        print("Ctrl-C (or `firebreak down` elsewhere) stops everything.", flush=True)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} exited with code {child.returncode}; stopping the stack", file=sys.stderr)
                    stopping = True
            time.sleep(0.3)
    finally:
        print("stopping …", flush=True)
        _stop(children)
        for name, _child_process in children:
            stack.forget(name)
        if server.started_here:
            stop_local_server()
            print("Prefect server stopped")
        stack.forget(stack.UP)
    return 0


def _simulator_services(port: int) -> Path:
    """A services file (runbooks.services) whose service URL is the simulator `up` starts."""
    path = get_settings().resolved_home / "services.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by `firebreak up --with-simulator`: the runbooks' operations API is its simulator.\n"
                    f"defaults:\n  service_url: http://127.0.0.1:{port}\n")
    return path


def cmd_down(args: argparse.Namespace) -> int:
    from firebreak.cli import stack

    stopped = stack.stop_all()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing started by firebreak is running")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the intake HTTP service (monitors post alerts here)")
    p.add_argument("--host", help="default 127.0.0.1 (FIREBREAK_INTAKE_HOST)")
    p.add_argument("--port", type=int, help="default 8700 (FIREBREAK_INTAKE_PORT)")
    p.add_argument("--workers", type=int, help="processes on the port, default 1 (FIREBREAK_INTAKE_WORKERS)")
    p.add_argument("--certfile", help="serve HTTPS with this PEM certificate chain (FIREBREAK_INTAKE_CERTFILE)")
    p.add_argument("--keyfile", help="the certificate's PEM private key (FIREBREAK_INTAKE_KEYFILE); "
                                     "an encrypted key's password: FIREBREAK_INTAKE_KEYFILE_PASSWORD")
    p.add_argument("--executor", choices=["warm", "deployment", "none"],
                   help="warm: run alert-started runbooks in this process (sub-second start; default); "
                        "deployment: create runs from the deployments for workers; none: only record")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("serve-deployments", help="serve the deployments in prefect.yaml (runs what the UI starts)")
    p.set_defaults(func=cmd_serve_deployments)

    p = subparsers.add_parser("up", help="start the local stack: Prefect server, deployments, intake (, simulator)")
    p.add_argument("--with-simulator", action="store_true", help="also serve the contact-centre simulator")
    p.add_argument("--executor", choices=["warm", "deployment"], default="warm",
                   help="how the intake runs alert-started runbooks")
    p.add_argument("--prefect-port", type=int, help="port of the local Prefect server and UI (default 4200, "
                                                    "FIREBREAK_PREFECT_PORT)")
    p.add_argument("--simulator-port", type=int, help="port of the simulator with --with-simulator (default 8765, "
                                                      "FIREBREAK_SIMULATOR_PORT)")
    from firebreak.cli.production_layout import register_arguments

    register_arguments(p)
    p.set_defaults(func=cmd_up)

    p = subparsers.add_parser("down", help="stop everything `firebreak up` started (its pid files) and the local "
                                           "Prefect server")
    p.set_defaults(func=cmd_down)
