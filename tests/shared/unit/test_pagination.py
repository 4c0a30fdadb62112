"""tollgate.shared.pagination: the one page type and cursor both services list with; pure, no fixtures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.shared import pagination
from tollgate.shared.errors import InvalidArgument

SCOPE = {"listing": "things", "tenant": "t1"}


def _violation(error: pytest.ExceptionInfo) -> tuple[str, str]:
    (violation,) = error.value.violations
    return violation.field, violation.description


def test_an_empty_token_starts_at_the_beginning_with_the_default_size():
    cursor = pagination.start(0, "", SCOPE, shape=(str,))
    assert (cursor.limit, cursor.after) == (pagination.DEFAULT_PAGE_SIZE, None)


def test_a_page_size_is_capped_and_a_negative_one_is_invalid():
    assert pagination.start(10**9, "", SCOPE, shape=(str,)).limit == pagination.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as refused:
        pagination.start(-1, "", SCOPE, shape=(str,))
    assert _violation(refused) == ("page_size", "must not be negative")


@given(items=st.lists(st.integers(0, 10**6), unique=True, max_size=40).map(sorted), limit=st.integers(1, 12))
def test_walking_the_pages_lists_every_item_once_in_order(items, limit):
    listed, token = [], ""
    while True:
        cursor = pagination.start(limit, token, SCOPE, shape=(int,))
        after = cursor.after[0] if cursor.after else -1
        page = cursor.page([i for i in items if i > after][: cursor.limit + 1], lambda i: (i,))
        assert len(page.items) <= limit
        listed += page.items
        token = page.next_page_token
        if not token:
            break
    assert listed == items


def test_the_last_page_has_no_token_and_a_full_one_does():
    cursor = pagination.start(2, "", SCOPE, shape=(int,))
    assert cursor.page([1, 2], lambda i: (i,)) == pagination.Page([1, 2], "")
    full = cursor.page([1, 2, 3], lambda i: (i,))
    assert full.items == [1, 2] and pagination.decode(full.next_page_token, SCOPE) == [2]


def test_a_token_of_another_tenant_or_filter_is_refused():
    token = pagination.encode(["a"], SCOPE)
    with pytest.raises(InvalidArgument) as refused:
        pagination.start(1, token, {**SCOPE, "tenant": "t2"}, shape=(str,))
    assert _violation(refused) == ("page_token", "was issued for another tenant or filter")


@pytest.mark.parametrize("token", ["not-a-token", "!!", "e30", pagination.encode(["a"], SCOPE)[:-3]])
def test_a_token_that_is_not_ours_is_refused(token):
    with pytest.raises(InvalidArgument) as refused:
        pagination.start(1, token, SCOPE, shape=(str,))
    assert _violation(refused)[0] == "page_token"


@pytest.mark.parametrize(
    "position, shape",
    [
        ([1], (str,)),
        (["a"], (int,)),
        ([True], (int,)),
        ([1, "a"], (int,)),
        ([1], (int, str)),
        ([2**63], (int,)),
        ([-(2**63) - 1], (int,)),
        (["a\x00"], (str,)),
        (["x" * (pagination.MAX_KEY_LENGTH + 1)], (str,)),
        ([None], (str,)),
        ([[1]], (int,)),
    ],
)
def test_a_forged_position_a_listing_could_not_have_issued_is_refused_before_sql(position, shape):
    token = pagination.encode(position, SCOPE)
    with pytest.raises(InvalidArgument) as refused:
        pagination.start(1, token, SCOPE, shape=shape)
    assert _violation(refused) == ("page_token", "is not a page token of this listing")


@pytest.mark.parametrize(
    "position, shape",
    [
        ([2**63 - 1, "e" * pagination.MAX_KEY_LENGTH], (int, str)),
        ([-(2**63), ""], (int, str)),
        (["r", "f"], (str, str)),
    ],
)
def test_any_position_a_listing_could_issue_resumes_there(position, shape):
    cursor = pagination.start(1, pagination.encode(position, SCOPE), SCOPE, shape=shape)
    assert cursor.after == tuple(position)
