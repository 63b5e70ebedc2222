"""Firebreak's exceptions: one tree, the way Prefect has one `exceptions.py`.

Every exception the project defines derives from `FirebreakError` through one of
the kinds below, so a caller can catch the whole family or one kind, and each
edge maps kinds in one place: the intake to HTTP answers (intake/edge.py
`HTTP_ANSWERS`), the CLI to one line on stderr and an exit code
(firebreak/cli/main.py `main`).

The concrete classes stay beside the code that raises them; those that callers
catch as a built-in type keep it as a second base (IncidentNotFound is still a
LookupError, RosterInvalid a ValueError, ApprovalTimedOut a TimeoutError …).

    FirebreakError
    ├── ConfigInvalid     YamlInvalid, RunbookInvalid, ContactsInvalid, RosterInvalid, EscalationInvalid,
    │                     RoutingInvalid (notifications), RoutesInvalid, SourcesInvalid (intake),
    │                     AuditKeyMissing (records.audit_key)
    ├── InputInvalid      StepInputError (RequestRefused: tasks.http), AcknowledgementInvalid
    ├── NotFound          IncidentNotFound, RunbookNotFound
    ├── Conflict          InvalidTransition, IncidentBusy, LeaseLost (records.run_locks)
    ├── Refused           AuthFailed, SignatureReplayed, AckTokenError (AckTokenForged,
    │                     AckTokenExpired), intake.edge.Refused
    ├── StoreUnavailable  (raised by the intake when the records database does not answer),
    │                     WriterUnreachable (intake.writer_process),
    │                     AnchorsUnavailable (records.audit: Prefect, where audit heads are anchored),
    │                     PrefectServerDidNotStart (firebreak.cli.prefect_server)
    ├── NotInstalled      PdfUnavailable (reports.pdf: WeasyPrint, its system libraries or a CJK font missing)
    ├── StepFailed        HttpCheckFailed, ConditionNotMet, ApprovalRejected, ApprovalTimedOut
    │   └── DeliveryFailed    NobodyReached, NobodyAcknowledged
    ├── RunbookFailed     (flows.engine; a kind of its own)
    └── WriterFailed      (intake.writer_process: a request the alert writer could not store, and not
                          because the store is down; a bug, answered 500)

Core layer: this module imports nothing from the project, so anything may import it.
"""
from __future__ import annotations

__all__ = [
    "ConfigInvalid",
    "Conflict",
    "DeliveryFailed",
    "FirebreakError",
    "InputInvalid",
    "NotFound",
    "NotInstalled",
    "Refused",
    "StepFailed",
    "StoreUnavailable",
]


class FirebreakError(Exception):
    """Base of every exception Firebreak defines; its message is written for the person who reads it."""


class ConfigInvalid(FirebreakError):
    """A configuration or runbook file has problems; the message gives one `file:line: field: problem` line each."""


class InputInvalid(FirebreakError):
    """Arguments given to an operation do not fit it (a step's arguments, a CLI parameter, an acknowledgement)."""


class NotFound(FirebreakError):
    """Something named by id does not exist (an incident, a runbook …)."""


class Conflict(FirebreakError):
    """The request conflicts with the current state (an incident's status cannot go back, a run is in progress)."""


class Refused(FirebreakError):
    """A request was refused at a trust boundary (bad credentials, a replayed signature, a forged or expired link)."""


class StoreUnavailable(FirebreakError):
    """The records database cannot be reached; nothing was stored, and trying again later may succeed."""


class NotInstalled(FirebreakError):
    """An optional feature lacks a library, system package or font here; the message says how to install it."""


class StepFailed(FirebreakError):
    """A runbook step's action ran and did not achieve its aim (a check failed, an approval was refused …)."""


class DeliveryFailed(StepFailed):
    """Notifications did not get through to someone who acts: nobody was reached, or nobody acknowledged."""
