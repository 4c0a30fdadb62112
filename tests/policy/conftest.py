"""Fixtures of the tests that send Policy's one-message statements themselves."""

from __future__ import annotations

import pytest

from tests import support
from tollgate.services.policy import tables
from tollgate.shared.db import create_engine_for


@pytest.fixture(params=["DIRECT", "TRANSACTION"])
def policy_engine(request, postgres_url):
    """Policy's pool on PostgreSQL, in both ways it sends a message: SQL PREPARE in one simple query
    (POLICY_DB_POOLING=DIRECT) and psycopg's pipeline with its own prepares (TRANSACTION)."""
    support.postgres_databases(postgres_url)  # migrated (idempotent)
    made = create_engine_for(
        postgres_url, schema=tables.SCHEMA, pre_ping=False, driver_prepares=request.param == "TRANSACTION"
    )
    yield made
    made.dispose()
