"""policy: catalog, tenant policy data, policy versions and the audit chain

Revision ID: policy_0002
Revises: policy_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "policy_0002"
down_revision = "policy_0001"
branch_labels = None
depends_on = None

SCHEMA = "policy"
ZERO_HASH = "0" * 64


def _mode(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer, sa.CheckConstraint(f"{name} BETWEEN 1 AND 6"), nullable=False)


def _catalog() -> None:
    op.create_table(
        "roles",
        sa.Column("role_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        _mode("default_cap"),
        sa.Column("feature_caps", sa.Text, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "features",
        sa.Column("feature_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000), nullable=False),
        _mode("max_mode"),
        sa.Column("metrics", sa.Text, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "plans",
        sa.Column("plan_id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        _mode("default_cap"),
        _mode("inactive_cap"),
        sa.Column("feature_caps", sa.Text, nullable=False),
        sa.Column("quotas", sa.Text, nullable=False),
        schema=SCHEMA,
    )


def _tenant_data() -> None:
    op.create_table(
        "tenant_policies",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        _mode("max_mode"),
        sa.Column("default_role_id", sa.String(64), sa.ForeignKey("policy.roles.role_id"), nullable=False),
        sa.Column("update_us", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "subscriptions",
        sa.Column("tenant_id", sa.String(128), sa.ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("policy.plans.plan_id"), nullable=False),
        sa.Column("status", sa.Integer, sa.CheckConstraint("status BETWEEN 1 AND 4"), nullable=False),
        sa.Column("feature_flags", sa.Text, nullable=False),
        sa.Column("update_us", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "overrides",
        sa.Column("tenant_id", sa.String(128), sa.ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
        sa.Column("override_id", sa.String(40), primary_key=True),
        sa.Column("role_id", sa.String(64), sa.ForeignKey("policy.roles.role_id"), nullable=False),
        sa.Column("feature_id", sa.String(64), sa.ForeignKey("policy.features.feature_id"), nullable=False),
        _mode("cap"),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("update_us", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("tenant_id", "role_id", "feature_id", name="overrides_tenant_role_feature_key"),
        schema=SCHEMA,
    )
    op.create_table(
        "bindings",
        sa.Column("tenant_id", sa.String(128), sa.ForeignKey("policy.tenant_policies.tenant_id"), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("role_id", sa.String(64), sa.ForeignKey("policy.roles.role_id"), primary_key=True),
        sa.Column("create_us", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("bindings_role_idx", "bindings", ["role_id"], schema=SCHEMA)


def _versions_and_audit() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("policy_versions_version_idx", "policy_versions", ["version"], schema=SCHEMA)
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, sa.CheckConstraint("id = 1"), primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )
    op.bulk_insert(head, [{"id": 1, "sequence": 0, "hash": ZERO_HASH}])
    op.create_table(
        "audit_records",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("time_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(400), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("change_digest", sa.String(64), nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("audit_records_tenant_idx", "audit_records", ["tenant_id", "sequence"], schema=SCHEMA)


def upgrade() -> None:
    _catalog()
    _tenant_data()
    _versions_and_audit()


def downgrade() -> None:
    for name in (
        "audit_records",
        "audit_head",
        "policy_versions",
        "bindings",
        "overrides",
        "subscriptions",
        "tenant_policies",
        "plans",
        "features",
        "roles",
    ):
        op.drop_table(name, schema=SCHEMA)
