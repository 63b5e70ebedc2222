"""The intake over HTTPS (`firebreak serve --certfile/--keyfile`), driven by the PagerDuty clients
monitors and scripts actually use: the maintained `pagerduty` package (EventsApiV2Client, on
httpx2) and the older `pdpyras` (EventsAPISession, on requests). Only their URL changes (the
Events API v2 base URL → the intake); each trusts the test's own CA the way its users would:
an ssl context for `pagerduty` (`verify=`), the session's `verify` (a CA bundle path) for pdpyras.

The certificate authority and the server certificate are made here (cryptography), valid for
127.0.0.1 and localhost only.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from firebreak.settings import PROJECT_ROOT
from records.alert_ingest import Alert
from records.db import session_scope
from records.incidents import events, get_incident
from tests.intake_harness import TOKENS, free_port, write_config
from tests.records_env import records_database_at
from tests.run_workers import FIREBREAK
from tests.runbook_helpers import write_runbook

pagerduty = pytest.importorskip("pagerduty", reason="the pagerduty client is not installed (pip install pagerduty)")
pdpyras = pytest.importorskip("pdpyras", reason="pdpyras is not installed (pip install pdpyras)")

ROUTING_KEY = TOKENS["FIREBREAK_TEST_PD_KEY"]


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 and localhost: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Firebreak test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firebreak intake")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "intake.pem", directory / "intake.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


class TlsIntake:
    def __init__(self, base: str, process: subprocess.Popen[bytes], log: Path):
        self.base, self.process, self.log = base, process, log


@pytest.fixture
def tls_intake(tmp_path: Path) -> Iterator[tuple[TlsIntake, Path]]:
    """`firebreak serve` over HTTPS on a free port (records only, in the test's own database); the CA file."""
    ca, cert, key = make_certificates(tmp_path)
    runbook = write_runbook(tmp_path, "tls-page", [{"id": "note", "action": "record", "with": {"message": "tls"}}])
    sources, routes = write_config(tmp_path, {"runbook": str(runbook)})
    port = free_port()
    records = f"sqlite:///{tmp_path / 'records.db'}"
    log = tmp_path / "intake.log"
    env = {**os.environ, **TOKENS, "FIREBREAK_DATABASE_URL": records, "FIREBREAK_INTAKE_SOURCES_FILE": str(sources),
           "FIREBREAK_INTAKE_ROUTES_FILE": str(routes), "FIREBREAK_INTAKE_EXECUTOR": "none"}
    process = subprocess.Popen([FIREBREAK, "serve", "--port", str(port), "--certfile", str(cert),
                                "--keyfile", str(key)], cwd=PROJECT_ROOT, env=env, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the HTTPS intake did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        with records_database_at(records):
            yield TlsIntake(base, process, log), ca
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _incident_of(dedup_key: str) -> str:
    with session_scope() as session:
        incident_id = session.scalar(select(Alert.incident_id).where(Alert.fingerprint == f"pagerduty/{dedup_key}"))
    assert incident_id, f"no incident for dedup_key {dedup_key}"
    return incident_id


def _stored(dedup_key: str) -> list[dict]:
    """What the intake stored of each event with this dedup_key, oldest first: the event as sent
    on the wire, less its routing_key."""
    with session_scope() as session:
        return [dict(row.payload, _status=row.status) for row in session.scalars(
            select(Alert).where(Alert.fingerprint == f"pagerduty/{dedup_key}").order_by(Alert.id))]


def _check_lifecycle(dedup_key: str, sent_by: str) -> None:
    incident_id = _incident_of(dedup_key)
    stored = _stored(dedup_key)
    assert [(s["event_action"], s["_status"]) for s in stored] == \
        [("trigger", "firing"), ("acknowledge", "acknowledged"), ("resolve", "resolved")]
    trigger = stored[0]
    # The Events v2 wire format the client sent, as intake/payloads.py took it (nothing lost or renamed).
    assert trigger["dedup_key"] == dedup_key and "routing_key" not in trigger
    assert trigger["payload"]["summary"] == f"disk full on db-1 ({sent_by})"
    assert (trigger["payload"]["source"], trigger["payload"]["severity"]) == ("db-1.example", "critical")
    assert trigger["payload"]["custom_details"] == {"free_bytes": 0, "mount": "/var"}
    statuses = [e.status for e in events(incident_id)]
    assert "monitor-acknowledged" in statuses and "monitor-resolved" in statuses
    assert get_incident(incident_id).status in ("acknowledged", "resolved")


def test_the_pagerduty_client_triggers_acknowledges_and_resolves_over_https(tls_intake) -> None:  # type: ignore[no-untyped-def]
    intake, ca = tls_intake
    # Only the URL changes: the events API base URL is the intake's (the client insists on https://).
    client = pagerduty.EventsApiV2Client(ROUTING_KEY, base_url=intake.base,
                                         verify=ssl.create_default_context(cafile=str(ca)))
    key = f"pagerduty-client-{time.time_ns()}"
    assert client.trigger("disk full on db-1 (pagerduty)", "db-1.example", dedup_key=key,
                          custom_details={"free_bytes": 0, "mount": "/var"}) == key
    assert client.acknowledge(key) == key
    assert client.resolve(key) == key
    _check_lifecycle(key, "pagerduty")
    generated = client.trigger("no key given", "db-2.example")  # the intake makes one, as PagerDuty does
    assert len(generated) == 32 and _incident_of(generated)
    # A wrong routing key is refused in PagerDuty's way; the client raises its own error.
    with pytest.raises(pagerduty.HttpError) as refused:
        pagerduty.EventsApiV2Client("not-a-key", base_url=intake.base,
                                    verify=ssl.create_default_context(cafile=str(ca))).trigger("x", "y")
    assert refused.value.response.status_code == 401


def test_pdpyras_triggers_acknowledges_and_resolves_over_https(tls_intake, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    intake, ca = tls_intake
    session = pdpyras.EventsAPISession(ROUTING_KEY)
    session.url = intake.base  # only the URL changes
    session.verify = str(ca)  # requests' way of trusting a CA …
    # … which REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE), when set in the environment, overrides: requests
    # prefers the environment's bundle to Session.verify. Point it at the CA too, as a deployment would.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    key = f"pdpyras-{time.time_ns()}"
    assert session.trigger("disk full on db-1 (pdpyras)", "db-1.example", dedup_key=key,
                           custom_details={"free_bytes": 0, "mount": "/var"}) == key
    assert session.acknowledge(key) == key
    assert session.resolve(key) == key
    _check_lifecycle(key, "pdpyras")


def test_the_https_intake_refuses_untrusted_and_plaintext_clients(tls_intake) -> None:  # type: ignore[no-untyped-def]
    intake, _ca = tls_intake
    untrusted = pdpyras.EventsAPISession(ROUTING_KEY)
    untrusted.url = intake.base  # the system's CAs do not know the test CA: the client refuses the server
    untrusted.max_network_attempts = 0  # at once, without its back-off
    with pytest.raises(pdpyras.PDClientError) as failed:
        untrusted.trigger("never sent", "db-1.example")
    assert type(failed.value.__cause__).__name__ == "SSLError", repr(failed.value.__cause__)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value.__cause__)
    with pytest.raises(httpx.HTTPError):  # no plaintext HTTP on the TLS port
        httpx.post(intake.base.replace("https://", "http://") + "/v2/enqueue",
                   json={"routing_key": ROUTING_KEY, "event_action": "trigger",
                         "payload": {"summary": "x", "source": "y", "severity": "info"}}, timeout=5)
    assert "Traceback" not in intake.log.read_text(errors="replace")


def test_an_idle_https_client_does_not_hold_the_intake_open_at_sigterm(tls_intake) -> None:  # type: ignore[no-untyped-def]
    """A monitor's keep-alive pool never sends TLS close_notify: the stopping intake cuts its idle
    connection instead of waiting out uvicorn's graceful timeout for it."""
    intake, ca = tls_intake
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca))) as client:
        assert client.get(f"{intake.base}/healthz").status_code == 200  # the connection stays open, idle
        intake.process.terminate()
        # uvicorn re-raises the SIGTERM it handled once it has shut down, so that is the exit status.
        assert intake.process.wait(timeout=60) in (0, -signal.SIGTERM)
    log = intake.log.read_text(errors="replace")
    assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log, log[-2000:]


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    done = subprocess.run([FIREBREAK, "serve", "--certfile", str(tmp_path / "intake.pem")], cwd=PROJECT_ROOT,
                          env={**os.environ, "FIREBREAK_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: TLS needs both --certfile and --keyfile (FIREBREAK_INTAKE_CERTFILE, "
                                   "FIREBREAK_INTAKE_KEYFILE), not one of them")
