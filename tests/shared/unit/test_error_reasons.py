"""docs/api.md lists every ErrorInfo reason the services can send, and only those; reads source, no fixtures."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# `reason = "X"` on an error class, `reason="X"` where one is raised, `message, reason = "...", "X"` in the
# error table: every way the code names a reason.
DECLARED = re.compile(r'\breason\s*=\s*"([A-Z][A-Z_]+)"|message, reason = "[^"]*", "([A-Z][A-Z_]+)"')
# Named in code but never sent: the base class's placeholder, and Policy's own signal that Usage did not
# answer (Policy answers without usage instead).
NEVER_SENT = {"ERROR", "USAGE_UNAVAILABLE"}
# Base classes whose own reason is sent only when something raises them (or a subclass without its own reason).
BASES = {
    "AlreadyExists": "ALREADY_EXISTS",
    "NotFound": "NOT_FOUND",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "OutOfRange": "OUT_OF_RANGE",
}
RAISED_PLAIN = set(BASES.values())


def _declared() -> set[str]:
    found = set()
    for path in ROOT.glob("tollgate/**/*.py"):
        for match in DECLARED.finditer(path.read_text()):
            found.add(match.group(1) or match.group(2))
    return found


def _documented() -> set[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text.split("## Error reasons", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))


def test_every_reason_the_code_names_is_in_the_table_of_docs_api_md():
    missing = _declared() - NEVER_SENT - RAISED_PLAIN - _documented()
    assert not missing, f"reasons sent but not in docs/api.md: {sorted(missing)}"


def test_the_table_lists_no_reason_the_code_cannot_send():
    assert not _documented() - _declared(), sorted(_documented() - _declared())


def test_no_base_class_reason_is_sent_undocumented_by_a_plain_raise():
    sent = set()
    for path in ROOT.glob("tollgate/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and not any(k.arg == "reason" for k in node.keywords):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in BASES:
                    sent.add(BASES[name])
    assert not sent - _documented(), sorted(sent - _documented())
