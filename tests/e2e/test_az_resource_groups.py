"""Resource groups through the real az CLI, end to end over HTTPS."""

from __future__ import annotations

import pytest

from tests.conftest import KumoServer, unique

pytestmark = [pytest.mark.e2e, pytest.mark.store]


def test_group_create_list_show_update_delete(kumo: KumoServer) -> None:
    name = unique("rgaz")
    created = kumo.az("group", "create", "-n", name, "-l", "local", "--tags", "env=test", "team=core")
    assert created["name"] == name
    assert created["location"] == "local"
    assert created["tags"] == {"env": "test", "team": "core"}
    assert created["properties"]["provisioningState"] == "Succeeded"
    sub = kumo.identity["subscription_id"]
    assert created["id"] == f"/subscriptions/{sub}/resourceGroups/{name}"

    listed = kumo.az("group", "list")
    assert name in {g["name"] for g in listed}

    shown = kumo.az("group", "show", "-n", name)
    assert shown["id"] == created["id"]

    updated = kumo.az("group", "update", "-n", name, "--set", "tags.env=prod")
    assert updated["tags"]["env"] == "prod"
    filtered = kumo.az("group", "list", "--tag", "env=prod")
    assert [g["name"] for g in filtered] == [name]

    assert kumo.az("group", "exists", "-n", name) is True
    assert kumo.az("resource", "list", "-g", name) == []

    kumo.az("group", "delete", "-n", name, "--yes")
    assert kumo.az("group", "exists", "-n", name) is False
    missing = kumo.az("group", "show", "-n", name, check=False)
    assert missing.returncode != 0
    assert "ResourceGroupNotFound" in missing.stderr


def test_az_follows_next_links_across_pages(kumo: KumoServer, resource_client) -> None:
    # The session server pages by 5: 12 groups span at least three pages.
    prefix = unique("page")
    names = {f"{prefix}-{i:02d}" for i in range(12)}
    for n in names:
        resource_client.resource_groups.create_or_update(n, {"location": "local"})
    try:
        with kumo.http() as http:
            first = http.get(f"/subscriptions/{kumo.identity['subscription_id']}/resourcegroups",
                             params={"api-version": "2024-11-01"}).json()
        assert len(first["value"]) == 5 and first["nextLink"].startswith(kumo.endpoint)
        listed = {g["name"] for g in kumo.az("group", "list")}
        assert names <= listed
        assert len([g for g in kumo.az("group", "list") if g["name"].startswith(prefix)]) == 12
    finally:
        for n in names:
            resource_client.resource_groups.begin_delete(n)


def test_location_alias_and_bad_location(kumo: KumoServer) -> None:
    name = unique("rgloc")
    g = kumo.az("group", "create", "-n", name, "-l", "West Europe")
    assert g["location"] == "westeurope"
    bad = kumo.az("group", "create", "-n", unique("rgbad"), "-l", "atlantis", check=False)
    assert bad.returncode != 0 and "LocationNotAvailableForResourceType" in bad.stderr
    kumo.az("group", "delete", "-n", name, "--yes", "--no-wait")
