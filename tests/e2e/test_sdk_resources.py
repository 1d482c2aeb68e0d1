"""Resource groups and generic resources through the real Azure SDK for Python (azure-identity's
ClientSecretCredential pointed at kumo, as the README shows)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.conftest import KumoServer, unique

pytestmark = [pytest.mark.e2e, pytest.mark.store]
TS_API = "2022-02-01"


def _template_spec(client, rg: str, name: str, tags: dict[str, str] | None = None):
    return client.resources.begin_create_or_update(
        rg, "Microsoft.Resources", "", "templateSpecs", name,
        {"location": "local", "tags": tags or {}, "properties": {"description": f"spec {name}"}},
        api_version=TS_API).result()


def test_sdk_resource_group_crud(resource_client) -> None:
    name = unique("rgsdk")
    rg = resource_client.resource_groups.create_or_update(name, {"location": "local", "tags": {"a": "1"}})
    assert rg.name == name and rg.tags == {"a": "1"} and rg.properties.provisioning_state == "Succeeded"
    assert resource_client.resource_groups.check_existence(name) is True
    assert resource_client.resource_groups.get(name).location == "local"
    assert name in {g.name for g in resource_client.resource_groups.list()}
    patched = resource_client.resource_groups.update(name, {"tags": {"b": "2"}})
    assert patched.tags == {"b": "2"}
    # PUT again is an update (200) and keeps the group's identity.
    again = resource_client.resource_groups.create_or_update(name, {"location": "local"})
    assert again.id == rg.id
    resource_client.resource_groups.begin_delete(name).result()
    assert resource_client.resource_groups.check_existence(name) is False
    with pytest.raises(ResourceNotFoundError) as e:
        resource_client.resource_groups.get(name)
    assert e.value.error.code == "ResourceGroupNotFound"


def test_sdk_top_pages_through_groups(resource_client) -> None:
    prefix = unique("top")
    for i in range(3):
        resource_client.resource_groups.create_or_update(f"{prefix}{i}", {"location": "local"})
    pages = resource_client.resource_groups.list(top=2).by_page()
    first = list(next(pages))
    assert len(first) == 2
    everything = {g.name for g in resource_client.resource_groups.list(top=2)}
    assert {f"{prefix}{i}" for i in range(3)} <= everything
    for i in range(3):
        resource_client.resource_groups.begin_delete(f"{prefix}{i}").result()


def test_generic_resources_listing_filters_and_cascade_delete(kumo: KumoServer, resource_client) -> None:
    rg = unique("rgcascade")
    resource_client.resource_groups.create_or_update(rg, {"location": "local"})
    for i in range(7):
        _template_spec(resource_client, rg, f"spec{i}", tags={"tier": "gold" if i % 2 else "silver"})
    listed = list(resource_client.resources.list_by_resource_group(rg))
    assert sorted(r.name for r in listed) == [f"spec{i}" for i in range(7)]
    assert {r.type for r in listed} == {"Microsoft.Resources/templateSpecs"}
    gold = list(resource_client.resources.list_by_resource_group(rg, filter="tagName eq 'tier' and tagValue eq 'gold'"))
    assert sorted(r.name for r in gold) == ["spec1", "spec3", "spec5"]
    by_type = kumo.az("resource", "list", "--resource-type", "Microsoft.Resources/templateSpecs")
    assert {f"spec{i}" for i in range(7)} <= {r["name"] for r in by_type if r["resourceGroup"] == rg}
    assert len(kumo.az("resource", "list", "-g", rg)) == 7

    resource_client.resource_groups.begin_delete(rg).result()
    assert resource_client.resource_groups.check_existence(rg) is False
    remaining = list(resource_client.resources.list(filter="resourceType eq 'Microsoft.Resources/templateSpecs'"))
    assert not [r for r in remaining if f"/resourceGroups/{rg}/".lower() in r.id.lower()]


def test_child_resources_and_not_found(kumo: KumoServer, resource_client) -> None:
    rg = unique("rgchild")
    resource_client.resource_groups.create_or_update(rg, {"location": "local"})
    _template_spec(resource_client, rg, "parent")
    version = resource_client.resources.begin_create_or_update(
        rg, "Microsoft.Resources", "templateSpecs/parent", "versions", "1.0",
        {"location": "local", "properties": {"mainTemplate": {"resources": []}}}, api_version=TS_API).result()
    assert version.id.endswith("/templateSpecs/parent/versions/1.0")
    with pytest.raises(HttpResponseError) as e:
        resource_client.resources.begin_create_or_update(
            rg, "Microsoft.Resources", "templateSpecs/nope", "versions", "1.0",
            {"location": "local", "properties": {"mainTemplate": {}}}, api_version=TS_API).result()
    assert e.value.status_code == 404 and e.value.error.code == "ResourceNotFound"
    with pytest.raises(HttpResponseError) as e:
        resource_client.resources.begin_create_or_update(
            rg, "Microsoft.Resources", "templateSpecs/parent", "versions", "2.0",
            {"location": "local", "properties": {}}, api_version=TS_API).result()
    assert e.value.status_code == 400 and e.value.error.target == "properties.mainTemplate"
    # Deleting the parent takes its versions with it.
    resource_client.resources.begin_delete(rg, "Microsoft.Resources", "", "templateSpecs", "parent",
                                            api_version=TS_API).result()
    with pytest.raises(ResourceNotFoundError):
        resource_client.resources.get(rg, "Microsoft.Resources", "templateSpecs/parent", "versions", "1.0",
                                   api_version=TS_API)
    resource_client.resource_groups.begin_delete(rg).result()
