"""The audit trail proves itself without a copy kept by hand (issue 10, item 6).

The attacker has the records database, not the audit key and not Prefect's database. Before
each kind of tampering every trigger is dropped, then events, heads, seals and whole
incidents are changed with raw SQL, hashes recomputed where that helps. `firebreak audit
verify` (as an operator runs it, against the session's real Prefect server) must name the
kind. The heads are published (reports.publish: the report, and the anchor in Prefect) the
way a run's end publishes them.

Written against what the code before issue 10 also had (raw SQL, publish_report, the CLI),
so the same file run there shows which of these it let through.
"""
from __future__ import annotations

import contextlib
import io
import re
import subprocess

import pytest
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.exc import DBAPIError

from records import audit, incidents
from records.db import get_engine
from records.models import EventPhase
from reports.publish import publish_report
from tests.audit_support import event_row, incident_with_events, insert_sql

pytestmark = pytest.mark.usefixtures("prefect_server")


def _firebreak(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line, as an operator runs it (in this process: Prefect takes seconds to import)."""
    from firebreak.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["firebreak", *args], code, out.getvalue(), err.getvalue())


def _verify(*args: str) -> tuple[int, str]:
    done = _firebreak("audit", "verify", *args)
    return done.returncode, done.stdout + done.stderr


def _published(count: int = 8) -> str:
    """An incident whose head was published, as a run's end publishes it."""
    incident_id = incident_with_events(count)
    publish_report(incident_id, None, artifact=False)
    return incident_id


def _drop_every_trigger(conn) -> None:
    if conn.dialect.name == "sqlite":
        for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).all():
            conn.execute(text(f'DROP TRIGGER "{name}"'))
    else:
        for name, table in conn.execute(text("SELECT tgname, tgrelid::regclass::text FROM pg_trigger "
                                             "WHERE NOT tgisinternal")).all():
            conn.execute(text(f'DROP TRIGGER "{name}" ON {table}'))


def _signed_heads(conn) -> bool:
    """Whether audit_heads keeps one signed row per head position (issue 10) or one row per incident."""
    return "signature" in {c["name"] for c in inspect(conn).get_columns("audit_heads")}


def _move_head_back(conn, incident_id: str, seq: int, digest: str) -> None:
    if _signed_heads(conn):
        conn.execute(text("DELETE FROM audit_heads WHERE incident_id = :i AND seq > :s"), {"i": incident_id, "s": seq})
    else:
        conn.execute(text("UPDATE audit_heads SET seq = :s, hash = :h WHERE incident_id = :i"),
                     {"i": incident_id, "s": seq, "h": digest})


def _point_heads_at(conn, incident_id: str, hashes: dict[int, str]) -> None:
    if _signed_heads(conn):
        for seq, digest in hashes.items():
            conn.execute(text("UPDATE audit_heads SET hash = :h WHERE incident_id = :i AND seq = :s"),
                         {"i": incident_id, "s": seq, "h": digest})
    else:
        last = max(hashes)
        conn.execute(text("UPDATE audit_heads SET seq = :s, hash = :h WHERE incident_id = :i"),
                     {"i": incident_id, "s": last, "h": hashes[last]})


def _delete_incident(conn, incident_id: str) -> None:
    """Every row of the incident, children first, then the incident itself."""
    tables = MetaData()
    tables.reflect(conn)
    for table in reversed(tables.sorted_tables):
        if "incident_id" in table.c and table.name != "incidents":
            conn.execute(table.delete().where(table.c.incident_id == incident_id))
    conn.execute(text("DELETE FROM incidents WHERE id = :i"), {"i": incident_id})


def _tamper(change) -> None:
    with get_engine().begin() as conn:
        _drop_every_trigger(conn)
        change(conn)


def _broken(output: str, kind: str, seq: int | None = None) -> bool:
    where = rf" \(event #{seq}\)" if seq is not None else r"( \(event #\d+\))?"
    return re.search(rf"BROKEN: {re.escape(kind)}{where}:", output) is not None


# --- the seven kinds, each with every trigger dropped first, on SQLite and PostgreSQL ---

def test_edited_event(backend: str) -> None:
    incident_id = _published()
    _tamper(lambda conn: conn.execute(text("UPDATE timeline_events SET summary = 'nothing happened' "
                                           "WHERE incident_id = :i AND seq = 5"), {"i": incident_id}))
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "edited event", 5), output


def test_inserted_event(backend: str) -> None:
    incident_id = _published()
    forged = event_row(incident_id, 5)
    forged.pop("id")
    forged.update(summary="Approved by the commander", actor="zhao-gang", seq=5, data={})
    forged["prev_hash"] = event_row(incident_id, 4)["hash"]
    forged["hash"] = audit.chain_hash(forged["prev_hash"], forged)

    def change(conn) -> None:
        for seq in range(8, 4, -1):
            conn.execute(text("UPDATE timeline_events SET seq = seq + 1 WHERE incident_id = :i AND seq = :s"),
                         {"i": incident_id, "s": seq})
        conn.execute(text(insert_sql(forged)[0]), insert_sql(forged)[1])

    _tamper(change)
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "inserted event", 5), output


def test_event_deleted_in_the_middle(backend: str) -> None:
    incident_id = _published()
    _tamper(lambda conn: conn.execute(text("DELETE FROM timeline_events WHERE incident_id = :i AND seq = 3"),
                                      {"i": incident_id}))
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "deleted event", 3), output


def test_reordered_events(backend: str) -> None:
    incident_id = _published()

    def change(conn) -> None:
        for old, new in ((3, -1), (6, 3), (-1, 6)):
            conn.execute(text("UPDATE timeline_events SET seq = :n WHERE incident_id = :i AND seq = :o"),
                         {"i": incident_id, "o": old, "n": new})

    _tamper(change)
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "reordered", 3), output


def test_tail_truncated_and_head_moved_back(backend: str) -> None:
    """Issue 10: deleting the last 3 events and moving the stored head back verified as intact."""
    incident_id = _published()
    fifth = event_row(incident_id, 5)

    def change(conn) -> None:
        conn.execute(text("DELETE FROM timeline_events WHERE incident_id = :i AND seq > 5"), {"i": incident_id})
        _move_head_back(conn, incident_id, 5, fifth["hash"])

    _tamper(change)
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "tail truncated", 6), output
    assert "#6–#8 are missing" in output and "Prefect anchor" in output


def test_whole_chain_rewritten_with_recomputed_hashes(backend: str) -> None:
    """Issue 10: rewriting the whole chain with recomputed hashes (and the head) verified as intact."""
    incident_id = _published()
    rows = [event_row(incident_id, seq) for seq in range(1, 9)]
    rows[0]["actor"] = "someone-else"  # who opened the incident
    previous = audit.GENESIS
    for row in rows:
        row["prev_hash"] = previous
        row["hash"] = previous = audit.chain_hash(previous, row)

    def change(conn) -> None:
        for row in rows:
            conn.execute(text("UPDATE timeline_events SET actor = :a, prev_hash = :p, hash = :h WHERE id = :id"),
                         {"a": row["actor"], "p": row["prev_hash"], "h": row["hash"], "id": row["id"]})
        _point_heads_at(conn, incident_id, {row["seq"]: row["hash"] for row in rows})

    _tamper(change)
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "whole chain rewritten", 1), output


def test_whole_chain_rewritten_leaving_the_heads_alone(backend: str) -> None:
    incident_id = incident_with_events()  # not even published: the signed heads alone catch it
    rows = [event_row(incident_id, seq) for seq in range(1, 9)]
    rows[0]["summary"] = "Incident opened by mistake"
    previous = audit.GENESIS
    for row in rows:
        row["prev_hash"] = previous
        row["hash"] = previous = audit.chain_hash(previous, row)
    _tamper(lambda conn: [conn.execute(text("UPDATE timeline_events SET summary = :m, prev_hash = :p, hash = :h "
                                            "WHERE id = :id"), {"m": row["summary"], "p": row["prev_hash"],
                                                                "h": row["hash"], "id": row["id"]})
                          for row in rows])
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "whole chain rewritten", 1), output


def test_incident_deleted_from_the_middle(backend: str) -> None:
    """Issue 10: deleting a whole incident verified as intact (`audit verify` walked what was left)."""
    first, second, third = _published(3), _published(3), _published(3)
    _tamper(lambda conn: _delete_incident(conn, second))
    code, output = _verify()
    assert code == 1 and _broken(output, "incident deleted"), output
    assert re.search(rf"^{second}: BROKEN: incident deleted", output, re.M), output
    for kept in (first, third):
        assert re.search(rf"^{kept}: intact", output, re.M), output


def test_last_incident_deleted_and_its_numbers_rolled_back(backend: str) -> None:
    first, last = _published(3), _published(3)
    year = last.split("-")[1]

    def change(conn) -> None:
        _delete_incident(conn, last)
        conn.execute(text("UPDATE sequences SET value = value - 1 WHERE name IN (:n, 'audit-seal')"),
                     {"n": f"incident-{year}"})

    _tamper(change)
    code, output = _verify()
    assert code == 1 and re.search(rf"^{last}: BROKEN: incident deleted:.*anchored in Prefect", output, re.M), output
    assert re.search(rf"^{first}: intact", output, re.M), output


# --- legitimate growth, and what the database itself refuses ---

def test_a_review_after_publication_verifies_as_extended_not_broken(backend: str) -> None:
    """Issue 10: a legitimate `firebreak review` made verify against the published head say BROKEN."""
    incident_id = _published()
    published = audit.verify(incident_id).head_hash  # the head the report printed
    assert published in (publish_report(incident_id, None, artifact=False)["en.md"]).read_text()
    review = _firebreak("review", incident_id, "--root-cause", "disk full", "--by", "li-wei")
    assert review.returncode == 0, review.stderr
    code, output = _verify(incident_id, "--expect-head", published)
    assert code == 0 and f"{incident_id}: intact, extended since #8" in output, output
    code, output = _verify(incident_id)  # the review published (and anchored) the new head
    assert code == 0 and f"{incident_id}: intact, 9 events, head #9" in output, output


def test_a_late_acknowledgement_moves_the_anchor_and_an_unpublished_event_extends_it(backend: str) -> None:
    incident_id = _published()
    ack = _firebreak("ack", incident_id, "--by", "Li Wei", "--comment", "saw it late")
    assert ack.returncode == 0, ack.stdout + ack.stderr
    code, output = _verify(incident_id)
    assert code == 0 and f"{incident_id}: intact," in output and "extended" not in output, output
    head = incidents.events(incident_id)[-1].seq
    incidents.append_event(incident_id, phase=EventPhase.note, status="info", actor="x", summary="later")
    code, output = _verify(incident_id)
    assert code == 0 and f"{incident_id}: intact, extended since #{head}" in output, output


def test_heads_and_seals_refuse_update_and_delete(backend: str) -> None:
    incident_id = _published(3)
    statements = ["UPDATE audit_heads SET seq = seq WHERE incident_id = :i",
                  "DELETE FROM audit_heads WHERE incident_id = :i"]
    with get_engine().connect() as conn:
        signed = _signed_heads(conn)
    if signed:
        statements += ["UPDATE audit_incident_seals SET legacy_seq = 0 WHERE incident_id = :i",
                       "DELETE FROM audit_incident_seals WHERE incident_id = :i",
                       "DELETE FROM audit_anchors WHERE incident_id = :i",
                       "DELETE FROM audit_installation"]
    for sql in statements:
        with pytest.raises(DBAPIError, match="append-only"):
            with get_engine().begin() as conn:
                conn.execute(text(sql), {"i": incident_id})
    if backend == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            with get_engine().begin() as conn:
                conn.execute(text("TRUNCATE audit_heads"))
    assert _verify(incident_id)[0] == 0


def test_a_head_changed_without_the_key_is_named(backend: str) -> None:
    incident_id = _published(4)
    _tamper(lambda conn: conn.execute(text("UPDATE audit_heads SET hash = :h WHERE incident_id = :i AND seq = 2"),
                                      {"i": incident_id, "h": "f" * 64}))
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "head signature invalid", 2), output


def test_unreachable_prefect_leaves_the_head_not_anchored(backend: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.notifications_support import closed_port

    incident_id = incident_with_events(4)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{closed_port()}/api"}):
        publish_report(incident_id, None, artifact=False)  # the run goes on; the failure is recorded
    code, output = _verify(incident_id)
    assert code == 3 and f"{incident_id}: not anchored" in output and "failed" in output, output
    publish_report(incident_id, None, artifact=False)  # Prefect is back: the next publication anchors
    assert _verify(incident_id)[0] == 0


def test_an_anchor_lost_from_prefect_is_an_anchor_mismatch(backend: str) -> None:
    from prefect.client.orchestration import get_client

    from records.audit_anchor import variable_name

    incident_id = _published(4)
    with get_client(sync_client=True) as client:
        client.delete_variable_by_name(variable_name(incidents.get_incident(incident_id).uid))
    code, output = _verify(incident_id)
    assert code == 1 and _broken(output, "anchor mismatch"), output
