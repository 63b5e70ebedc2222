"""Configuration files report problems the way runbooks do: file, line, field."""
from __future__ import annotations

from pathlib import Path

import pytest

from notifications.contacts import ContactsInvalid, load_directory
from notifications.escalation import EscalationInvalid, load_policies


def test_contacts_errors_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "contacts.yaml"
    path.write_text("contacts:\n  - id: x\n    name: X\n    department: Logistics\n    roles: [logistics]\n"
                    "    channels: [1]\n    pager: yes\n")
    with pytest.raises(ContactsInvalid) as caught:
        load_directory(path)
    lines = str(caught.value).splitlines()
    assert any(line.endswith(":6: contacts[0].channels[0]: Input should be a valid string") for line in lines)
    assert any(line.endswith(":7: contacts[0].pager: unknown field") for line in lines)


def test_duplicate_keys_and_syntax_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "escalation.yaml"
    path.write_text("policies:\n  default: {}\n  default: {}\n")
    with pytest.raises(EscalationInvalid, match=r":3: policies\.default: duplicate key 'default' \(first on line 2\)"):
        load_policies(path)
    path.write_text("policies: [\n")
    with pytest.raises(EscalationInvalid, match="YAML syntax error"):
        load_policies(path)
