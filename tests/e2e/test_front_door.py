"""The front door's contract: errors as ARM sends them, case-insensitive routing, any api-version,
headers, and long-running operations that report real progress."""

from __future__ import annotations

import time

import pytest

from tests.conftest import KumoServer, unique

pytestmark = [pytest.mark.e2e, pytest.mark.store]
API = {"api-version": "2024-11-01"}


@pytest.fixture
def http(kumo: KumoServer):
    with kumo.http() as c:
        yield c


def _sub(kumo: KumoServer) -> str:
    return f"/subscriptions/{kumo.identity['subscription_id']}"


def _err(r) -> tuple[int, str]:
    return r.status_code, r.json()["error"]["code"]


def test_malformed_bodies_get_invalid_request_content(kumo: KumoServer, http) -> None:
    url = f"{_sub(kumo)}/resourcegroups/{unique('rgbody')}"
    assert _err(http.put(url, params=API, content=b'{"location": ')) == (400, "InvalidRequestContent")
    assert _err(http.put(url, params=API, content=b"[1,2]")) == (400, "InvalidRequestContent")
    assert _err(http.put(url, params=API, content=b"\xff\xfe{}")) == (400, "InvalidRequestContent")
    assert _err(http.put(url, params=API, content=b"")) == (400, "InvalidRequestContent")
    deep = b'{"a":' * 200 + b"1" + b"}" * 200
    assert _err(http.put(url, params=API, content=deep)) == (400, "InvalidRequestContent")
    huge = b'{"location":"local","tags":{"a":"' + b"x" * (5 * 1024 * 1024) + b'"}}'
    assert _err(http.put(url, params=API, content=huge)) == (413, "RequestContentTooLarge")
    assert _err(http.put(url, params=API, json={"tags": {}})) == (400, "LocationRequired")
    assert _err(http.put(url, params=API, json={"location": "local", "tags": "x"})) == (400, "InvalidRequestContent")


def test_bad_names_and_missing_things(kumo: KumoServer, http) -> None:
    r = http.put(f"{_sub(kumo)}/resourcegroups/bad!name", params=API, json={"location": "local"})
    assert _err(r) == (400, "InvalidResourceGroup") and "'!'" in r.json()["error"]["message"]
    assert _err(http.put(f"{_sub(kumo)}/resourcegroups/endsdot.", params=API,
                         json={"location": "local"})) == (400, "InvalidResourceGroup")
    assert _err(http.get(f"{_sub(kumo)}/resourcegroups/{unique('nope')}", params=API)) == \
        (404, "ResourceGroupNotFound")
    rg = unique("rgnames")
    assert http.put(f"{_sub(kumo)}/resourcegroups/{rg}", params=API, json={"location": "local"}).status_code == 201
    base = f"{_sub(kumo)}/resourceGroups/{rg}/providers"
    assert _err(http.get(f"{base}/Microsoft.Resources/templateSpecs/none", params=API)) == (404, "ResourceNotFound")
    assert _err(http.put(f"{base}/Microsoft.Nope/things/a", params=API, json={})) == \
        (400, "InvalidResourceNamespace")
    assert _err(http.put(f"{base}/Microsoft.Resources/gizmos/a", params=API, json={})) == \
        (400, "InvalidResourceType")
    assert _err(http.put(f"{base}/Microsoft.Resources/templateSpecs/bad%23name", params=API,
                         json={"location": "local"})) == (400, "InvalidResourceName")
    assert _err(http.put(f"{_sub(kumo)}/resourcegroups/{rg}", params=API, json={"location": "eastus"})) == \
        (409, "InvalidResourceGroupLocation")
    assert _err(http.get(f"/subscriptions/{'0' * 8}-0000-0000-0000-{'0' * 12}/resourcegroups", params=API)) == \
        (404, "SubscriptionNotFound")
    assert _err(http.post(f"{_sub(kumo)}/resourcegroups", params=API)) == (405, "MethodNotAllowed")
    assert _err(http.get(f"{_sub(kumo)}/resourcegroups", params={**API, "$filter": "name eq"})) == \
        (400, "InvalidFilterInQueryString")
    assert _err(http.get(f"{_sub(kumo)}/resourcegroups", params={**API, "$skiptoken": "%%%"})) == \
        (400, "InvalidSkipToken")
    http.delete(f"{_sub(kumo)}/resourcegroups/{rg}", params=API)


def test_api_version_is_required_but_any_version_is_accepted(kumo: KumoServer, http) -> None:
    url = f"{_sub(kumo)}/resourcegroups"
    assert _err(http.get(url)) == (400, "MissingApiVersionParameter")
    assert _err(http.get(url, params={"api-version": "latest"})) == (400, "InvalidApiVersionParameter")
    for version in ("1999-01-01", "2015-06-15", "2030-12-31-preview"):
        assert http.get(url, params={"api-version": version}).status_code == 200


def test_paths_match_case_insensitively_and_headers_are_set(kumo: KumoServer, http) -> None:
    rg = unique("rgCase")
    sub = kumo.identity["subscription_id"]
    r = http.put(f"/SUBSCRIPTIONS/{sub.upper()}/RESOURCEGROUPS/{rg}", params=API, json={"location": "local"})
    assert r.status_code == 201
    assert r.headers["x-ms-request-id"] and r.headers["x-ms-correlation-request-id"]
    got = http.get(f"/subscriptions/{sub}/resourceGroups/{rg.lower()}", params={"API-VERSION": "2024-11-01"})
    assert got.status_code == 200 and got.json()["name"] == rg
    assert http.head(f"/subscriptions/{sub}/resourcegroups/{rg}", params=API).status_code == 204
    assert http.head(f"/subscriptions/{sub}/resourcegroups/{unique('none')}", params=API).status_code == 404
    http.delete(f"/subscriptions/{sub}/resourcegroups/{rg}", params=API)


def test_resource_group_delete_is_a_long_running_operation(kumo: KumoServer, http) -> None:
    rg = unique("rglro")
    url = f"{_sub(kumo)}/resourcegroups/{rg}"
    http.put(url, params=API, json={"location": "local"})
    for i in range(4):
        http.put(f"{url}/providers/Microsoft.Resources/templateSpecs/s{i}", params={"api-version": "2022-02-01"},
                 json={"location": "local"})
    r = http.delete(url, params=API)
    assert r.status_code == 202
    assert r.headers["Retry-After"] == "1"
    status_url, result_url = r.headers["Azure-AsyncOperation"], r.headers["Location"]
    assert status_url.startswith(kumo.endpoint) and "api-version=" in status_url
    deadline = time.time() + 20
    while True:
        status = http.get(status_url).json()
        assert status["status"] in ("InProgress", "Succeeded")
        if status["status"] == "Succeeded" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert status["status"] == "Succeeded" and status["percentComplete"] == 100.0 and status["endTime"]
    assert http.get(result_url).status_code == 204
    assert _err(http.get(url, params=API)) == (404, "ResourceGroupNotFound")
    # Deleting what is already gone is 404 for a group, as on Azure.
    assert _err(http.delete(url, params=API)) == (404, "ResourceGroupNotFound")


def test_subscriptions_tenants_locations_and_providers(kumo: KumoServer, http) -> None:
    ident = kumo.identity
    subs = http.get("/subscriptions", params=API).json()
    assert any(s["subscriptionId"] == ident["subscription_id"] and s["state"] == "Enabled" for s in subs["value"])
    assert http.get(_sub(kumo), params=API).json()["tenantId"] == ident["tenant_id"]
    tenants = http.get("/tenants", params=API).json()["value"]
    assert ident["tenant_id"] in {t["tenantId"] for t in tenants}
    locations = {loc["name"] for loc in http.get(f"{_sub(kumo)}/locations", params=API).json()["value"]}
    assert {"local", "westeurope", "eastus"} <= locations
    providers, page = [], http.get(f"{_sub(kumo)}/providers", params=API).json()
    while True:  # kumo runs with a page size of 5 here: every page
        providers += page["value"]
        if not page.get("nextLink"):
            break
        page = http.get(page["nextLink"]).json()
    res = next(p for p in providers if p["namespace"] == "Microsoft.Resources")
    assert res["registrationState"] == "Registered"
    assert {"resourceGroups", "templateSpecs"} <= {t["resourceType"] for t in res["resourceTypes"]}
    r = http.post(f"{_sub(kumo)}/providers/Microsoft.Resources/unregister", params=API)
    assert r.json()["registrationState"] == "Unregistered"
    rg = unique("rgreg")
    http.put(f"{_sub(kumo)}/resourcegroups/{rg}", params=API, json={"location": "local"})
    ts = f"{_sub(kumo)}/resourcegroups/{rg}/providers/Microsoft.Resources/templateSpecs/t"
    assert _err(http.put(ts, params=API, json={"location": "local"})) == (409, "MissingSubscriptionRegistration")
    http.post(f"{_sub(kumo)}/providers/Microsoft.Resources/register", params=API)
    assert http.put(ts, params=API, json={"location": "local"}).status_code == 201
    assert http.get("/providers/Microsoft.Resources", params=API).status_code == 200
    http.delete(f"{_sub(kumo)}/resourcegroups/{rg}", params=API)


def test_patch_merges_properties_and_replaces_tags(kumo: KumoServer, http) -> None:
    rg = unique("rgpatch")
    http.put(f"{_sub(kumo)}/resourcegroups/{rg}", params=API, json={"location": "local"})
    url = f"{_sub(kumo)}/resourcegroups/{rg}/providers/Microsoft.Resources/templateSpecs/spec"
    ts_api = {"api-version": "2022-02-01"}
    created = http.put(url, params=ts_api, json={"location": "local", "tags": {"a": "1"},
                                                 "properties": {"description": "d", "displayName": "n"}})
    assert created.status_code == 201
    r = http.patch(url, params=ts_api, json={"tags": {"b": "2"}, "properties": {"description": "changed"}})
    assert r.status_code == 200
    body = http.get(url, params=ts_api).json()
    assert body["tags"] == {"b": "2"}
    assert body["properties"]["description"] == "changed" and body["properties"]["displayName"] == "n"
    http.delete(f"{_sub(kumo)}/resourcegroups/{rg}", params=API)
