import time
from pathlib import Path
import pytest
from records.incidents import events
from tests.test_approval import Background, gated, resume
pytestmark = pytest.mark.usefixtures("prefect_server")

def test_dbg(tmp_path: Path, simulator) -> None:
    t0 = time.monotonic()
    run = Background(gated(tmp_path, "gate-escalate", timeout=2, on_timeout="escalate", escalate_to=["scenario_lead"]))
    incident_id, _ = run.paused_incident()
    print("paused after", time.monotonic() - t0)
    deadline = time.monotonic() + 90
    while not any(e.status == "approval-escalated" for e in events(incident_id)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    print("escalated after", time.monotonic() - t0)
    _, flow_run_id = run.paused_incident()
    resume(flow_run_id, run_input={"decision": "approve", "approver": "Qian Li"})
    run.finish()
    print("finished after", time.monotonic() - t0)
    for e in events(incident_id):
        print(e.at.strftime("%H:%M:%S.%f"), e.step_id, e.phase, e.status, e.summary[:100], e.error and e.error[:200])
