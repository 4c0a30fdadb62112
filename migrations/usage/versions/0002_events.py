"""events and metrics: raw usage events with their three dedup keys, and the seeded metric catalog

Revision ID: usage_0002
Revises: usage_0001
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "usage_0002"
down_revision = "usage_0001"
branch_labels = None
depends_on = None

SCHEMA = "usage"

# The default catalog as shipped in this revision (history is frozen: later changes get their own
# revision). tollgate/services/usage/domain/catalog.py holds the same list; a test checks they agree.
DEFAULT_CATALOG = [
    ("leads.processed", "BILLABLE", "lead", "Leads processed."),
    ("leads.qualified", "BILLABLE", "lead", "Leads qualified."),
    ("leads.routed", "BILLABLE", "lead", "Leads routed to an owner."),
    ("scoring.requests", "BILLABLE", "request", "Scoring requests served."),
    ("scoring.models.used", "BILLABLE", "model", "Scoring models used."),
    ("voice.minutes.authorized", "BILLABLE", "minute", "Voice minutes authorized."),
    ("voice.calls.initiated", "BILLABLE", "call", "Voice calls initiated."),
    ("voice.calls.completed", "BILLABLE", "call", "Voice calls completed."),
    ("api.requests", "BILLABLE", "request", "API requests."),
    ("api.requests.successful", "BILLABLE", "request", "API requests that succeeded."),
    ("integrations.api.calls", "BILLABLE", "call", "Calls to integration APIs."),
    ("sla.timers.started", "NON_BILLABLE", "timer", "SLA timers started."),
    ("sla.timers.violated", "NON_BILLABLE", "timer", "SLA timers violated."),
    ("sla.escalations.triggered", "NON_BILLABLE", "escalation", "SLA escalations triggered."),
    ("api.requests.failed", "NON_BILLABLE", "request", "API requests that failed."),
    ("integrations.webhooks.received", "NON_BILLABLE", "webhook", "Integration webhooks received."),
]


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("occurred_at_us", sa.BigInteger, nullable=False),
        sa.Column("actor_id", sa.String(128), nullable=False),
        sa.Column("source_service", sa.String(128), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("received_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name="events_pkey"),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="events_idempotency_key"),
        sa.UniqueConstraint("tenant_id", "correlation_id", "metric", "occurred_at_us", name="events_correlation"),
        sa.CheckConstraint("quantity > 0", name="events_quantity_positive"),
        schema=SCHEMA,
    )
    op.create_index("events_by_metric_time", "events", ["tenant_id", "metric", "occurred_at_us"], schema=SCHEMA)
    op.create_index("events_by_time", "events", ["tenant_id", "occurred_at_us"], schema=SCHEMA)
    metrics = op.create_table(
        "metrics",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    now_us = int(time.time() * 1_000_000)
    op.bulk_insert(
        metrics,
        [
            {
                "name": name,
                "classification": classification,
                "unit": unit,
                "description": description,
                "updated_at_us": now_us,
            }
            for name, classification, unit, description in DEFAULT_CATALOG
        ],
    )


def downgrade() -> None:
    op.drop_table("metrics", schema=SCHEMA)
    op.drop_index("events_by_time", table_name="events", schema=SCHEMA)
    op.drop_index("events_by_metric_time", table_name="events", schema=SCHEMA)
    op.drop_table("events", schema=SCHEMA)
