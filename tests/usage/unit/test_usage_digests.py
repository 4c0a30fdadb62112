"""source_hash (domain/digests.py) and SQLite's port of PostgreSQL's hash (repository/sqlite/source_hash.py), pure."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.services.usage.domain.digests import EMPTY, shown, value
from tollgate.services.usage.repository.sqlite.source_hash import pg_hash_text

# hashtextextended(s, 0) as PostgreSQL 16 answers it, read as unsigned: every tail length of lookup3 (0 to 11
# bytes past whole 12-byte blocks), multi-byte UTF-8, and an event's own shape (event_id ':' content_hash).
POSTGRES = {
    "": 11507180170145056365,
    "a": 3591986179850072241,
    "abc": 11698987603481062295,
    "abcd": 17408314770343659564,
    "hello world!": 15580256444760764127,
    "0123456789abc": 4688655838450958077,
    "e-1:" + "f" * 64: 3232119057710935272,
    "naïve ✓": 5218466814007662520,
    "x" * 23: 815588739347500138,
}


@pytest.mark.parametrize("text", sorted(POSTGRES))
def test_the_python_hash_is_postgresqls_hashtextextended(text):
    assert pg_hash_text(text.encode()) == POSTGRES[text]


def test_a_bucket_without_events_shows_sixteen_zeros():
    assert shown(0) == EMPTY == "0000000000000000"


@settings(max_examples=150, deadline=None)
@given(st.integers(-(2**80), 2**80))
def test_a_digest_shows_sixteen_lower_case_hex_digits_of_its_sum_mod_2_64(total):
    text = shown(total)
    assert len(text) == 16 and text == text.lower() and value(text) == total % 2**64


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2**64 - 1), max_size=6), max_size=6))
def test_a_buckets_digest_is_the_sum_of_its_parts_digests(parts):
    whole = shown(sum(sum(part) for part in parts))
    assert whole == shown(sum(value(shown(sum(part))) for part in parts))
