"""Usage's PostgreSQL statements stay correct with its tables distributed by tenant_id (Citus): a row is never
matched by its ctid without its tenant (the same ctid exists in every shard), and advisory locks are taken
as statements of their own, over no table."""

import re

import pytest
from sqlalchemy.sql.elements import TextClause

from tollgate.services.usage.repository import postgres
from tollgate.services.usage.repository.postgres import bulk_ingest, rollup_days, rollup_pass

MODULES = (postgres, rollup_pass, rollup_days, bulk_ingest)


def _statements() -> dict[str, str]:
    found = {}
    for module in MODULES:
        for name, value in vars(module).items():
            text = value.text if isinstance(value, TextClause) else value
            if isinstance(text, str) and re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\b", text):
                found[f"{module.__name__}.{name}"] = text
    return found


def _conditions_on_ctid(sql: str) -> list[str]:
    """Each condition (the text between WHERE/ON and the end of its clause) comparing a ctid."""
    clauses = re.split(r"\b(?:FOR UPDATE|GROUP BY|ORDER BY|RETURNING|LIMIT)\b|\)\s*,\s*\n", sql)
    return [clause for clause in clauses if re.search(r"\bctid\s*=", clause)]


def test_the_postgres_statements_are_found():
    assert "tollgate.services.usage.repository.postgres.rollup_pass._APPLY" in _statements()


@pytest.mark.parametrize("name", sorted(_statements()))
def test_every_row_matched_by_ctid_is_matched_by_its_tenant_too(name):
    for condition in _conditions_on_ctid(_statements()[name]):
        assert re.search(r"\btenant_id\s*=", condition), f"{name} matches rows by ctid alone: {condition!r}"


@pytest.mark.parametrize("name", sorted(name for name, sql in _statements().items() if "pg_advisory" in sql))
def test_advisory_locks_are_statements_over_no_table(name):
    sql = _statements()[name]
    assert re.fullmatch(r"SELECT pg_advisory_\w+\([^()]*(\([^()]*\))?\)", sql.strip()), sql
    assert " FROM " not in sql.upper()
