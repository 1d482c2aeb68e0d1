"""ARM id parsing, OData filters and skip tokens."""

from __future__ import annotations

import pytest

from kumo.arm import ids, odata
from kumo.arm.errors import ArmError
from kumo.arm.paging import decode_token, encode_token


def test_parse_resource_paths_case_insensitively() -> None:
    p = ids.parse("/SUBSCRIPTIONS/abc/ResourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/v1/subnets/s1")
    assert p is not None
    assert (p.subscription, p.resource_group, p.namespace) == ("abc", "rg1", "Microsoft.Network")
    assert p.rest == ("virtualNetworks", "v1", "subnets", "s1")
    assert ids.parse("/subscriptions/abc/resourcegroups").tail == ("resourcegroups",)
    assert ids.parse("/subscriptions/abc/resourceGroups/rg/resources").tail == ("resources",)
    assert ids.parse("/subscriptions").subscription is None
    assert ids.parse("/providers/Microsoft.Compute").namespace == "Microsoft.Compute"
    assert ids.parse("/metadata/endpoints") is None


def test_resource_id_round_trip_and_keys() -> None:
    text = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/V/subnets/A"
    rid = ids.parse_resource_id(text)
    assert rid is not None and str(rid) == text
    assert rid.key == text.lower() and rid.type == "Microsoft.Network/virtualNetworks/subnets"
    assert rid.parent is not None and str(rid.parent).endswith("/virtualNetworks/V")
    assert ids.parse_resource_id("/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/x") is None


@pytest.mark.parametrize(("expr", "expected"), [
    ("name eq 'Web'", True),
    ("name ne 'web'", False),
    ("tagName eq 'env' and tagValue eq 'prod'", True),
    ("tagName eq 'env' and tagValue eq 'dev'", False),
    ("tagName eq 'team'", False),
    ("substringof('eb', name)", True),
    ("startswith(name, 'x') or resourceType eq 'Microsoft.Compute/virtualMachines'", True),
    ("not (location eq 'local')", False),
    ("name eq 'it''s'", False),
])
def test_odata_filters(expr: str, expected: bool) -> None:
    fields = {"name": "web", "tags": {"env": "prod"}, "resourcetype": "Microsoft.Compute/virtualMachines",
              "location": "local"}.get
    assert odata.matches(odata.parse(expr), fields) is expected


@pytest.mark.parametrize("bad", ["name eq", "name gt 'a'", "(name eq 'a'", "name eq 'a' foo", "name eq 'a' %"])
def test_odata_errors_name_the_position(bad: str) -> None:
    with pytest.raises(ArmError) as e:
        odata.parse(bad)
    assert e.value.code == "InvalidFilterInQueryString" and e.value.status == 400


def test_skip_tokens_round_trip_and_reject_garbage() -> None:
    key = "/subscriptions/x/resourcegroups/ünïcode"
    assert decode_token(encode_token(key)) == key
    with pytest.raises(ArmError):
        decode_token("%%%")
