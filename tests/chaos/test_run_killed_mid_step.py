"""Chaos (v): `kill -9` the worker running a system-outage run at a random step, in seeded trials.

Each trial is a real outage run (the simulator's service down, real pages through its inbox, a
stand-in responder clicking the signed acknowledgement links), asked for through the outbox as the
intake asks, and executed by a `firebreak worker` process, which is killed outright (SIGKILL) just
after a step chosen by the trial's seed begins or ends, plus a random few milliseconds. Then, as
the `reconcile-incidents` deployment and an operator would:

- reconcile finds the dead run and pages the incident's responsible roles once, however often it
  runs, and the incident shows it needs attention (no incident ends silently);
- an operator resumes the run (`firebreak incident resume`); a new worker runs the same flow run
  on, and it finishes: the incident is closed. What the killed run did stands: its side effects,
  its pages and its reads (a fresh health check after the fail-over would skip the rest).

Across both: no side effect happens twice in the simulator (every mutating request carries an
Idempotency-Key, and no key is executed twice; at most one isolation and one fail-over), and no page
is delivered twice (each page's text, with its own signed ack link, reaches the inbox at most as
often as pages were recorded with it). Prints what each trial did.

FIREBREAK_CHAOS_TRIALS (default 3; 10 before CI had to fit 25 minutes) and FIREBREAK_CHAOS_SEED (default 9) choose the trials.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.killed_runs import KILL_POINTS, Trial, run_trial

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("prefect_server")]

TRIALS = int(os.environ.get("FIREBREAK_CHAOS_TRIALS", "3"))
SEED = int(os.environ.get("FIREBREAK_CHAOS_SEED", "9"))


def test_kill_9_the_worker_at_a_random_step_then_reconcile_and_resume(tmp_path: Path, prefect_server: str) -> None:
    rng = random.Random(SEED)
    trials = []
    for n in range(TRIALS):
        step, phase = rng.choice(KILL_POINTS)
        trials.append(Trial(seed=SEED * 1000 + n, step=step, phase=phase, delay=rng.uniform(0, 0.2)))
    for trial in trials:
        run_trial(trial, tmp_path / f"trial-{trial.seed}", prefect_server)

    print(f"\nchaos (v): {len(trials)} system-outage runs, each in a `firebreak worker` killed (SIGKILL) at a "
          f"seeded random step (seed {SEED}), reconciled, and resumed by an operator")
    for t in trials:
        where = f"after {t.step} {t.phase} +{t.delay * 1000:.0f}ms"
        judged = ("it had already ended" if t.ended_before_kill else f"reconciled as crashed, {t.alarm_pages} "
                  "alarm page(s) delivered")
        print(f"  {t.incident_id} killed {where}: {judged}; resume: {t.resumed} ({t.reused} step(s) reused); "
              f"simulator: {t.mutations} mutations ({t.replays} answered from its idempotency memo, 0 executed "
              f"twice); inbox: {t.pages} pages, 0 repeated")


