"""SQL of Usage's audit chain: the shared chain statements over the usage schema's tables."""

from __future__ import annotations

from shared.audit_chain import AuditChain

from services.usage.tables import audit_head, audit_records

CHAIN = AuditChain(audit_records, audit_head)
