"""Chaos (iii): the commonest outage, a service that refuses connections, run as an operator's drill:
`firebreak drill system-outage --fault unreachable` in a process of its own, with records of its
own. It must end with pages delivered and the incident visibly open and needing attention (issue 9:
before, it paged nobody and left the incident `triggered` for ever)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("prefect_server")]

REPO = Path(__file__).resolve().parents[2]


def test_cli_drill_against_an_unreachable_service_ends_with_pages_and_an_incident_needing_attention(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FIREBREAK_") or k in ("FIREBREAK_LOCAL_TIMEZONE",)}
    env["FIREBREAK_HOME"] = str(tmp_path / "home")  # records of its own: the drill reconciles what it finds
    drill = subprocess.run([sys.executable, "-m", "firebreak", "drill", "system-outage", "--fault", "unreachable"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert drill.returncode == 0, drill.stdout + drill.stderr
    out = drill.stdout
    assert "refuses connections; its notification inbox listens at http://127.0.0.1:" in out
    pages = re.search(r"^pages: (\d+) of (\d+) delivered$", out, re.MULTILINE)
    assert pages and int(pages.group(1)) >= 6, out
    incident_id = re.search(r"^incident: (INC-\d{4}-\d+)$", out, re.MULTILINE).group(1)
    assert re.search(rf"^NEEDS ATTENTION: {incident_id} is still acknowledged and no run is driving it: ", out,
                     re.MULTILINE), out
    assert "unreachable: ConnectError" in out  # the recorded facts, in the printed timeline
    listing = subprocess.run([sys.executable, "-m", "firebreak", "incidents"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"^{incident_id} .*acknowledged .*run completed.*\n    NEEDS ATTENTION: the runbook run "
                     r"completed but the incident is still acknowledged", listing.stdout, re.MULTILINE), listing.stdout
    print(f"\nchaos (iii): `firebreak drill system-outage --fault unreachable`: {pages.group(1)} of {pages.group(2)} "
          f"pages delivered; {incident_id} left acknowledged, shown as NEEDS ATTENTION in `firebreak incidents`")
