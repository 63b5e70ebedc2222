"""Checking the seed service commitments (runbooks.commitments: the catalogue of
targets and their seed references) against what an incident's records say.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runbooks.commitments import Commitment, Measure
from runbooks.schema import CommitmentRef


@dataclass(frozen=True)
class CheckResult:
    commitment: Commitment
    result: str  # pass | fail | pending | not_measured
    measured: timedelta | None
    target: timedelta
    note: str = ""


@dataclass(frozen=True)
class StepTimes:
    """What the records say about one evidence step."""

    first_started: datetime | None
    first_succeeded: datetime | None
    final_status: str | None  # succeeded | failed | skipped | None (never ran)
    output: Any = None


def check(commitment: Commitment, ref: CommitmentRef, *, level: str, detected: datetime,
          acknowledged: datetime | None, resolved: datetime | None, first_delivery: datetime | None,
          steps: dict[str, StepTimes], parameters: dict[str, Any], run_ended: bool) -> CheckResult:
    """Pass when the measured time is at most the target (the target itself passes)."""
    target = commitment.target_for(level)

    def by(moment: datetime | None, what: str) -> CheckResult:
        if moment is None:
            if run_ended:
                return CheckResult(commitment, "fail", None, target, f"{what} never happened")
            return CheckResult(commitment, "pending", None, target, f"{what} has not happened yet")
        measured = moment - detected
        return CheckResult(commitment, "pass" if measured <= target else "fail", measured, target, what)

    if commitment.measure is Measure.acknowledged:
        return by(acknowledged, "acknowledged")
    if commitment.measure is Measure.first_delivery:
        return by(first_delivery, "first notification delivered")
    if commitment.measure is Measure.resolved:
        return by(resolved, "resolved")
    evidence = [steps.get(step_id) for step_id in ref.evidence]
    ran = [times for times in evidence if times is not None and times.final_status not in (None, "skipped")]
    names = ", ".join(ref.evidence)
    if not ran:
        if run_ended:
            return CheckResult(commitment, "not_measured", None, target, f"evidence step(s) {names} did not run")
        return CheckResult(commitment, "pending", None, target, f"waiting for {names}")
    if commitment.measure is Measure.evidence_started:
        starts = [t.first_started for t in ran if t.first_started]  # failed before acting: not started
        return by(min(starts) if starts else None, f"{names} started")
    if commitment.measure is Measure.evidence_succeeded:
        moments = [t.first_succeeded for t in ran if t.first_succeeded]
        return by(min(moments) if moments else None, f"{names} succeeded")
    # restored: the evidence confirmed the level holds again, against a target no looser than the seed's
    asked = parameters.get(commitment.parameter or "")
    if asked is not None and timedelta(seconds=float(asked)) > target:
        return CheckResult(commitment, "fail", timedelta(seconds=float(asked)), target,
                           f"the runbook aimed for {float(asked):g} s, looser than the commitment")
    moments = [t.first_succeeded for t in ran if t.first_succeeded]
    if not moments:
        return CheckResult(commitment, "fail" if run_ended else "pending", None, target,
                           f"{names} never confirmed the target holds")
    measured = timedelta(seconds=float(asked)) if asked is not None else target
    return CheckResult(commitment, "pass", measured, target,
                       f"confirmed by {names} after {(min(moments) - detected).total_seconds():.1f} s")
