"""One convention for "the platform / every tenant": None in code, '' in a request, '*' in text; pure."""

from __future__ import annotations

import pytest

from tollgate.shared import auth, credentials
from tollgate.shared.auth import AccessRefused
from tollgate.shared.credentials import Principal
from tollgate.shared.errors import InvalidArgument

PLATFORM = Principal("tok_p", None, frozenset())
TENANT_A = Principal("tok_a", "a", frozenset())
EXPECTED = {  # (caller, tenant_id in the request) -> the tenants the call acts on, or the error
    (PLATFORM, ""): None,
    (PLATFORM, "a"): "a",
    (PLATFORM, "b"): "b",
    (PLATFORM, "*"): InvalidArgument,
    (TENANT_A, ""): AccessRefused,
    (TENANT_A, "a"): "a",
    (TENANT_A, "b"): AccessRefused,
    (TENANT_A, "*"): InvalidArgument,
}


@pytest.mark.parametrize("caller, tenant_id", list(EXPECTED))
def test_an_empty_tenant_in_a_request_is_every_tenant_for_the_platform_only(caller, tenant_id):
    expected = EXPECTED[(caller, tenant_id)]
    if isinstance(expected, type):
        with pytest.raises(expected):
            auth.tenant_scope(caller, tenant_id, "the thing")
    else:
        assert auth.tenant_scope(caller, tenant_id, "the thing") == expected


def test_refusing_every_tenant_to_a_tenant_says_what_was_asked_for():
    with pytest.raises(AccessRefused, match="^the thing needs a platform credential$"):
        auth.tenant_scope(TENANT_A, "", "the thing")


def test_the_platform_is_none_in_code_and_star_in_text():
    assert PLATFORM.is_platform and not TENANT_A.is_platform
    assert [credentials.tenant_label(p.tenant_id) for p in (PLATFORM, TENANT_A)] == ["*", "a"]


def test_the_platform_may_name_any_tenant_and_a_tenant_only_its_own():
    auth.require_tenant(PLATFORM, "b")
    auth.require_tenant(TENANT_A, "a")
    with pytest.raises(AccessRefused):
        auth.require_tenant(TENANT_A, "b")
    auth.require_platform(PLATFORM, "x")
    with pytest.raises(AccessRefused):
        auth.require_platform(TENANT_A, "x")
