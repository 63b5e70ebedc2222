"""`python -m simulator --port 8765 --fault down`: serve until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from simulator import start_simulator
from simulator.scenarios import SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Simulated contact-centre service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--fault", choices=SCENARIOS, default="none")
    parser.add_argument("--recovery-seconds", type=float, default=3.0,
                        help="how long IVR diversion takes to absorb a congestion surge")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    if args.recovery_seconds < 0:
        parser.error("--recovery-seconds must be >= 0")

    # Ctrl-C stops it even when it was started with SIGINT ignored, as a shell script's `&` job is or a
    # parent that ignored it: Python then installs no KeyboardInterrupt handler of its own (a full suite
    # run saw Ctrl-C ignored for 10 s).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sim = start_simulator(args.host, args.port, fault=args.fault, recovery_seconds=args.recovery_seconds,
                          verbose=args.verbose)
    # The URL goes to stdout alone on its line and is flushed, so a wrapper (make demo)
    # can read it even when --port 0 chose the port.
    print(sim.url, flush=True)
    if sim.inbox_url != sim.url:  # fault unreachable: the service refuses connections, the inbox is elsewhere
        print(f"inbox: {sim.inbox_url} (the service at {sim.url} refuses connections)", file=sys.stderr, flush=True)
    try:
        # Serve in the background thread until interrupted. The wait wakes every second: the kernel may hand
        # SIGINT to a serving thread, and a main thread asleep in a wait without a timeout would never run
        # Python's handler (a full suite run once saw Ctrl-C ignored for 10 s).
        stopped = threading.Event()  # never set: only Ctrl-C ends the wait
        while not stopped.is_set():
            stopped.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
