"""The key that signs the audit trail's heads, kept outside the records database.

HMAC-SHA256 under this key signs every head of every incident's hash chain, each
incident's global seal and the anchors written to Prefect (records.audit,
records.audit_anchor). Someone who can rewrite the records database but does not
hold the key cannot make a signature the verifier accepts.

The key comes from FIREBREAK_AUDIT_KEY. Unset, a random key is created once in
FIREBREAK_HOME/audit-key with mode 0600 and reused, exactly like the
acknowledgement secret (notifications.acknowledgement.links). It is never
printed or logged; only its key id (a one-way digest) is stored beside each
signature, so a head signed under another key is named as such.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from firebreak.errors import ConfigInvalid
from firebreak.settings import get_settings

KEY_FILE_NAME = "audit-key"
_lock = threading.Lock()
#: Keys read from files, by path: every event is signed, and the file does not change under a process.
_read: dict[Path, AuditKey] = {}


class AuditKeyMissing(ConfigInvalid, RuntimeError):
    """No audit key: FIREBREAK_AUDIT_KEY is unset and FIREBREAK_HOME/audit-key does not exist (or is empty)."""


@dataclass(frozen=True)
class AuditKey:
    secret: bytes
    #: Where it came from, for messages: "FIREBREAK_AUDIT_KEY" or the file's path (never the key).
    source: str

    def __repr__(self) -> str:  # never show the secret, not even in a traceback's locals
        return f"AuditKey(id={self.key_id}, source={self.source})"

    @property
    def key_id(self) -> str:
        """A short one-way digest naming the key (not secret: it cannot give the key back)."""
        return hashlib.sha256(b"firebreak-audit-key-id\n" + self.secret).hexdigest()[:16]

    def sign(self, payload: str) -> str:
        mac = _keyed(self.secret).copy()  # the key's padded state once, not per signature
        mac.update(payload.encode("utf-8"))
        return mac.hexdigest()

    def verifies(self, payload: str, signature: str | None, key_id: str | None = None) -> bool:
        if not signature or (key_id is not None and key_id != self.key_id):
            return False
        return hmac.compare_digest(self.sign(payload), signature)


@functools.lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    return hmac.new(secret, digestmod=hashlib.sha256)


def key_path() -> Path:
    return get_settings().resolved_home / KEY_FILE_NAME


def load_key(*, create: bool = True) -> AuditKey:
    """The installation's audit key. With create=False (verifying), a missing key file raises
    AuditKeyMissing instead of being generated: a new key could verify nothing signed before."""
    configured = get_settings().audit_key
    if configured is not None and configured.get_secret_value():
        return AuditKey(configured.get_secret_value().encode(), "FIREBREAK_AUDIT_KEY")
    path = key_path()
    with _lock:
        if path in _read:
            return _read[path]
        if not path.exists():
            if not create:
                raise AuditKeyMissing(f"no audit key: FIREBREAK_AUDIT_KEY is unset and {path} does not exist")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first
                pass
            else:
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        value = path.read_text().strip()
        if not value:
            raise AuditKeyMissing(f"{path} is empty; restore it from a backup (a new key verifies nothing signed "
                                  f"before)")
        key = _read[path] = AuditKey(value.encode(), str(path))
    return key
