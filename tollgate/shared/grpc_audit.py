"""The audit chain on the wire: both services list their chain as tollgate.audit.v1.AuditRecord."""

from __future__ import annotations

from tollgate.audit.v1 import audit_pb2
from tollgate.shared.audit import AuditRecord
from tollgate.shared.proto_time import from_micros


def record_to_proto(record: AuditRecord) -> audit_pb2.AuditRecord:
    """One link of a chain, as ListAuditRecords answers it."""
    return audit_pb2.AuditRecord(
        sequence=record.sequence,
        time=from_micros(record.time_us),
        actor=record.actor,
        action=record.action,
        target=record.target,
        tenant_id=record.tenant_id,
        change_digest=record.change_digest,
        previous_hash=record.previous_hash,
        hash=record.hash,
    )
