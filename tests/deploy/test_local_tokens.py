"""`make run` keeps its tokens under var/ and reuses one only while it still verifies with every scope asked for:
a token kept from an older checkout that lacks a scope this one needs (Policy's usage:write) is replaced."""

from __future__ import annotations

import pytest

from scripts import tokens
from tollgate.shared import credentials


@pytest.fixture
def environment(dbs, monkeypatch):
    monkeypatch.setenv("USAGE_DATABASE_URL", dbs.usage_url)
    monkeypatch.setenv("POLICY_DATABASE_URL", dbs.policy_url)


def _ensure(path, scopes: list[str]) -> str:
    return tokens.ensure(path, tenant=None, scopes=scopes, service="usage", label="policy service")


def test_a_kept_token_with_every_scope_asked_for_is_reused(environment, tmp_path):
    path = tmp_path / "policy-usage.token"
    first = _ensure(path, ["usage:read", "usage:write"])
    assert _ensure(path, ["usage:read", "usage:write"]) == first
    assert _ensure(path, ["usage:read"]) == first  # more scopes than asked for still serve


def test_a_kept_token_missing_a_scope_is_replaced_by_one_with_it(environment, tmp_path):
    path = tmp_path / "policy-usage.token"
    old = _ensure(path, ["usage:read"])
    new = _ensure(path, ["usage:read", "usage:write"])
    assert new != old
    assert path.read_text().strip() == new
    assert credentials.parse(new)[0] != credentials.parse(old)[0]


def test_a_file_holding_no_token_is_replaced(environment, tmp_path):
    path = tmp_path / "policy-usage.token"
    path.write_text("not a token\n")
    made = _ensure(path, ["usage:read"])
    assert made.startswith("tg_")
    assert path.read_text().strip() == made
