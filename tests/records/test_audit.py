"""The append-only, hash-chained timeline on SQLite and, where reachable, PostgreSQL.

The attacker here has the database: they drop the triggers first, then change,
delete, insert or swap events with raw SQL, recomputing hashes where that helps
them. `audit.verify` must still name the first broken event and what happened.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from records import audit, incidents
from records.db import get_engine
from records.models import EventPhase
from tests.audit_support import event_row, incident_with_events, insert_sql


def _drop_triggers(conn) -> None:
    if conn.dialect.name == "sqlite":
        conn.execute(text("DROP TRIGGER timeline_events_no_update"))
        conn.execute(text("DROP TRIGGER timeline_events_no_delete"))
    else:
        conn.execute(text("DROP TRIGGER timeline_events_no_change ON timeline_events"))


def _tamper(*statements: tuple[str, dict]) -> None:
    with get_engine().begin() as conn:
        _drop_triggers(conn)
        for sql, params in statements:
            conn.execute(text(sql), params)






def test_intact_chain_verifies_and_links_every_event(backend: str) -> None:
    incident_id = incident_with_events()
    result = audit.verify(incident_id)
    assert result.intact and result.events == 8 and result.head_seq == 8
    timeline = incidents.events(incident_id)
    assert timeline[0].prev_hash == audit.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(timeline, timeline[1:], strict=False))
    assert result.head_hash == timeline[-1].hash == audit.head(incident_id)[1]


def test_triggers_refuse_update_and_delete(backend: str) -> None:
    incident_id = incident_with_events(3)
    for sql in ("UPDATE timeline_events SET summary = 'rewritten' WHERE incident_id = :i",
                "DELETE FROM timeline_events WHERE incident_id = :i"):
        with pytest.raises(DBAPIError, match="append-only"):
            with get_engine().begin() as conn:
                conn.execute(text(sql), {"i": incident_id})
    if backend == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            with get_engine().begin() as conn:
                conn.execute(text("TRUNCATE timeline_events CASCADE"))
    assert audit.verify(incident_id).intact and len(incidents.events(incident_id)) == 3


def test_changed_field_is_detected(backend: str) -> None:
    incident_id = incident_with_events()
    _tamper(("UPDATE timeline_events SET summary = 'nothing happened' WHERE incident_id = :i AND seq = 5",
             {"i": incident_id}))
    result = audit.verify(incident_id)
    assert not result.intact
    assert (result.broken.problem, result.broken.seq) == ("edited", 5)


def test_changed_and_rehashed_event_is_detected(backend: str) -> None:
    incident_id = incident_with_events()
    row = event_row(incident_id, 4)
    row["actor"] = "someone-else"
    forged = audit.chain_hash(row["prev_hash"], row)
    _tamper(("UPDATE timeline_events SET actor = 'someone-else', hash = :h WHERE incident_id = :i AND seq = 4",
             {"i": incident_id, "h": forged}))
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("edited", 4)


def test_deleted_event_is_detected(backend: str) -> None:
    incident_id = incident_with_events()
    _tamper(("DELETE FROM timeline_events WHERE incident_id = :i AND seq = 3", {"i": incident_id}))
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("deleted", 3)


def test_deleted_and_renumbered_event_is_detected(backend: str) -> None:
    incident_id = incident_with_events()
    statements = [("DELETE FROM timeline_events WHERE incident_id = :i AND seq = 3", {"i": incident_id})]
    statements += [("UPDATE timeline_events SET seq = seq - 1 WHERE incident_id = :i AND seq = :s",
                    {"i": incident_id, "s": s}) for s in range(4, 9)]
    _tamper(*statements)
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("deleted", 3)


def test_deleted_tail_is_detected_by_the_signed_heads(backend: str) -> None:
    incident_id = incident_with_events()
    _tamper(("DELETE FROM timeline_events WHERE incident_id = :i AND seq >= 7", {"i": incident_id}))
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("truncated", 7)


def test_inserted_event_is_detected_even_with_a_valid_hash(backend: str) -> None:
    incident_id = incident_with_events()
    forged = event_row(incident_id, 5)  # shape of a real row
    forged.pop("id")
    forged.update(summary="Approved by the commander", actor="zhao-gang", seq=5, data={})
    forged["prev_hash"] = event_row(incident_id, 4)["hash"]
    forged["hash"] = audit.chain_hash(forged["prev_hash"], forged)
    shift = [("UPDATE timeline_events SET seq = seq + 1 WHERE incident_id = :i AND seq = :s",
              {"i": incident_id, "s": s}) for s in range(8, 4, -1)]
    _tamper(*shift, insert_sql(forged))
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("inserted", 5)


def test_event_appended_behind_the_services_back_is_detected(backend: str) -> None:
    incident_id = incident_with_events()
    forged = event_row(incident_id, 8)
    forged.pop("id")
    forged.update(seq=9, summary="Resolved", prev_hash=forged["hash"])
    forged["hash"] = audit.chain_hash(forged["prev_hash"], forged)
    sql, params = insert_sql(forged)
    with get_engine().begin() as conn:  # no trigger stops an INSERT; the recorded head does
        conn.execute(text(sql), params)
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("inserted", 9)


def test_swapped_events_are_detected(backend: str) -> None:
    incident_id = incident_with_events()
    params = {"i": incident_id}
    _tamper(("UPDATE timeline_events SET seq = -1 WHERE incident_id = :i AND seq = 3", params),
            ("UPDATE timeline_events SET seq = 3 WHERE incident_id = :i AND seq = 6", params),
            ("UPDATE timeline_events SET seq = 6 WHERE incident_id = :i AND seq = -1", params))
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("reordered", 3)


def test_swapped_contents_with_rehashing_is_detected(backend: str) -> None:
    """Swap two events' summaries and recompute both hashes: the links give it away."""
    incident_id = incident_with_events()
    third, sixth = event_row(incident_id, 3), event_row(incident_id, 6)
    third_new = {**third, "summary": sixth["summary"]}
    sixth_new = {**sixth, "summary": third["summary"]}
    _tamper(("UPDATE timeline_events SET summary = :s, hash = :h WHERE id = :id",
             {"s": third_new["summary"], "h": audit.chain_hash(third["prev_hash"], third_new), "id": third["id"]}),
            ("UPDATE timeline_events SET summary = :s, hash = :h WHERE id = :id",
             {"s": sixth_new["summary"], "h": audit.chain_hash(sixth["prev_hash"], sixth_new), "id": sixth["id"]}))
    broken = audit.verify(incident_id).broken
    assert (broken.problem, broken.seq) == ("edited", 3)


def test_cli_verify_exit_codes_and_head(backend: str) -> None:
    incident_id = incident_with_events(4)
    # Never published, so never anchored outside the records: no tampering, but not proven either (3).
    ok = subprocess.run([sys.executable, "-m", "firebreak", "audit", "verify", incident_id],
                        capture_output=True, text=True)
    assert ok.returncode == 3, ok.stdout + ok.stderr
    assert audit.verify(incident_id).head_hash in ok.stdout and "not anchored" in ok.stdout
    _tamper(("DELETE FROM timeline_events WHERE incident_id = :i AND seq = 2", {"i": incident_id}))
    bad = subprocess.run([sys.executable, "-m", "firebreak", "audit", "verify", incident_id],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "deleted" in bad.stdout + bad.stderr and "#2" in bad.stdout + bad.stderr
    every = subprocess.run([sys.executable, "-m", "firebreak", "audit", "verify"], capture_output=True, text=True)
    assert every.returncode == 1 and incident_id in every.stdout + every.stderr


def test_migration_seals_events_recorded_before_it(backend: str) -> None:
    from alembic import command
    from alembic.config import Config

    from records.db import MIGRATIONS_DIR, dispose_all, migrate

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with get_engine().begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    stamp = "2026-01-28 01:00:00.123456" if backend == "sqlite" else "2026-01-28 01:00:00.123456+00"
    with get_engine().begin() as conn:
        conn.execute(text("INSERT INTO incidents (id, runbook_id, runbook_version, title, level, status, run_state, "
                          "source, drill, parameters, created_at, triggered_at) VALUES ('INC-2026-0001', "
                          "'system-outage', '1.0', 'old', 'II', 'triggered', 'completed', 'cli', false, '{}', "
                          ":t, :t)"), {"t": stamp})
        for seq in (1, 2, 3):
            conn.execute(text("INSERT INTO timeline_events (incident_id, seq, attempt, phase, status, actor, summary, "
                              "data, at) VALUES ('INC-2026-0001', :s, 1, 'note', 'info', 'old', :m, '{\"k\": [1, 2]}', :t)"),
                         {"s": seq, "m": f"recorded before the audit chain {seq}", "t": stamp})
    dispose_all()  # forget the per-process "already migrated" mark
    migrate()
    result = audit.verify("INC-2026-0001")
    assert result.intact and result.events == 3
    incidents.append_event("INC-2026-0001", phase=EventPhase.note, status="info", actor="new", summary="after")
    assert audit.verify("INC-2026-0001").intact and audit.head("INC-2026-0001")[0] == 4


def test_the_audit_key_is_kept_outside_the_records(backend: str) -> None:
    import os
    import stat

    from firebreak.settings import reload_settings
    from records.audit_key import key_path

    incident_id = incident_with_events(3)
    path = key_path()  # generated once, like the ack secret
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    with get_engine().connect() as conn:
        stored = [str(row) for table in ("audit_heads", "audit_incident_seals", "timeline_events")
                  for row in conn.execute(text(f"SELECT * FROM {table}")).all()]
    assert stored and all(secret not in row for row in stored)
    assert audit.verify(incident_id).intact

    os.environ["FIREBREAK_AUDIT_KEY"] = "another-key-from-the-secret-store"
    reload_settings()
    try:
        broken = audit.verify(incident_id).broken  # signed under the file's key
        assert broken.problem == "signature-invalid" and "another key" in broken.detail
        later = incident_with_events(2)
        assert audit.verify(later).intact
    finally:
        del os.environ["FIREBREAK_AUDIT_KEY"]
        reload_settings()
    assert audit.verify(incident_id).intact and not audit.verify(later).intact
