"""Microsoft.ContainerRegistry/registries: a real OCI registry per resource (kumo.registry), served
on its own HTTPS port on localhost (loginServer `localhost:<port>`, the port claimed from
Settings.registry_ports in the PUT's transaction). Names are unique across all subscriptions.
Admin passwords live in the stored body's `_secrets`, which no GET, list or event shows; only
listCredentials/regenerateCredential return them."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import ResourceId
from kumo.arm.lro import iso
from kumo.config import Settings
from kumo.providers.base import ResourceType
from kumo.providers.network.common import canonical
from kumo.registry.auth import hash_password, new_password
from kumo.registry.listeners import port_free
from kumo.registry.service import RegistryService
from kumo.registry.target import CATALOG, SECRETS
from kumo.store import Resource, Tx

if TYPE_CHECKING:
    from kumo.arm.context import RequestContext, Services

API_VERSIONS = ("2026-09-01-preview", "2025-11-01", "2025-04-01", "2023-11-01-preview", "2023-07-01",
                "2023-01-01-preview", "2022-12-01", "2021-09-01", "2019-05-01")
NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
NAME_RULE = "The registry name must be 5-50 characters long and contain only alphanumeric characters."
POOL = "registry-port"
SKUS = ("Basic", "Standard", "Premium")


def without_secrets(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != SECRETS}


def _bool(props: dict[str, Any], key: str, default: bool) -> bool:
    value = props.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise bad_request("InvalidRequestContent", f"'properties.{key}' must be a boolean.", f"properties.{key}")
    return value


def name_taken(name: str) -> ArmError:
    return ArmError(409, "AlreadyInUse", f"The registry DNS name {name.lower()} is already in use. You can check if "
                    "the name is already claimed using following API: https://docs.microsoft.com/en-us/rest/api/"
                    "containerregistry/registries/checknameavailability")


async def _name_owner(tx: Tx, name: str) -> str | None:
    """The key of the registry (in any subscription) holding `name`, or "catalog" for kumo's own."""
    if name.lower() == CATALOG:
        return CATALOG
    for other in await tx.resources_of_type("Microsoft.ContainerRegistry/registries"):
        if other.name.lower() == name.lower():
            return other.key
    return None


class Registries(ResourceType):
    # 1. the ARM type
    namespace = "Microsoft.ContainerRegistry"
    type_path = ("registries",)
    api_versions = API_VERSIONS
    name_pattern = NAME
    name_rule = NAME_RULE
    actions = {"listcredentials": "list_credentials", "regeneratecredential": "regenerate_credential",
               "generatecredentials": "generate_credentials"}
    provider_actions = {"checknameavailability": "check_name_availability"}

    def __init__(self, service: RegistryService, settings: Settings) -> None:
        self.service = service  # the data plane: storage, auth, listeners (RegistryService.of finds it here)
        self.settings = settings

    # 2. normalise + validate
    def normalise(self, rid: ResourceId, body: dict[str, Any], existing: Resource | None) -> dict[str, Any]:
        props = super().normalise(rid, body, existing)["properties"]
        sku_raw = body.get("sku") or (existing.body.get("sku") if existing else None)
        if not isinstance(sku_raw, dict) or not sku_raw.get("name"):
            raise bad_request("InvalidSku", "The 'sku' property is required: one of Basic, Standard, Premium.", "sku")
        sku = canonical(sku_raw.get("name"), SKUS, "sku.name")
        out: dict[str, Any] = {
            "adminUserEnabled": _bool(props, "adminUserEnabled", False),
            "anonymousPullEnabled": _bool(props, "anonymousPullEnabled", False),
            "dataEndpointEnabled": False, "dataEndpointHostNames": [], "privateEndpointConnections": [],
            "publicNetworkAccess": canonical(props.get("publicNetworkAccess"), ("Enabled", "Disabled"),
                                             "properties.publicNetworkAccess", "Enabled"),
            "networkRuleBypassOptions": canonical(props.get("networkRuleBypassOptions"), ("AzureServices", "None"),
                                                  "properties.networkRuleBypassOptions", "AzureServices"),
            "zoneRedundancy": canonical(props.get("zoneRedundancy"), ("Enabled", "Disabled"),
                                        "properties.zoneRedundancy", "Disabled"),
            "encryption": {"status": "disabled"},
            "policies": {"quarantinePolicy": {"status": "disabled"},
                         "trustPolicy": {"type": "Notary", "status": "disabled"},
                         "retentionPolicy": {"days": 7, "status": "disabled"},
                         "exportPolicy": {"status": "enabled"}},
        }
        return {"sku": {"name": sku, "tier": sku}, "properties": out}

    async def write_through(self, tx: Tx, resource: Resource, existing: Resource | None) -> None:
        props = resource.body["properties"]
        if existing is not None:
            old = existing.body.get("properties") or {}
            props["loginServer"], props["creationDate"] = old.get("loginServer"), old.get("creationDate")
            resource.body[SECRETS] = existing.body.get(SECRETS) or {}
            return
        owner = await _name_owner(tx, resource.name)
        if owner is not None and owner != resource.key:
            raise name_taken(resource.name)
        port = await self._allocate_port(tx, resource.id)
        props["loginServer"] = f"{self.settings.public_host}:{port}"
        props["creationDate"] = iso(time.time())
        resource.body[SECRETS] = {"admin": {"password": new_password(), "password2": new_password()}}

    async def _allocate_port(self, tx: Tx, owner: str) -> int:
        taken = await tx.allocated(POOL)
        for port in self.settings.registry_port_range:
            if port not in taken and port_free(self.settings.host, port) and await tx.claim(POOL, port, owner):
                return port
        raise ArmError(409, "QuotaExceeded", f"kumo has no free registry port left in {self.settings.registry_ports}; "
                       "delete a registry or start kumo with a larger --registry-ports range.")

    # 3. GET shape
    def view(self, resource: Resource) -> dict[str, Any]:
        return without_secrets(resource.body)

    # 4. host effects: the registry's listener
    async def realise(self, services: "Services", resource: Resource) -> None:
        try:
            await self.service.open(resource)
        except OSError as e:
            raise ArmError(409, "RegistryPortUnavailable", f"kumo cannot listen on the registry's port: {e}") from None

    async def remove(self, services: "Services", resource: Resource) -> None:
        await self.service.remove(resource)

    # actions
    async def check_name_availability(self, ctx: "RequestContext", subscription: str) -> Response:
        body = await ctx.object_body()
        name = body.get("name")
        if not isinstance(name, str) or str(body.get("type", "")).lower() != "microsoft.containerregistry/registries":
            raise bad_request("InvalidRequestContent", "The request needs 'name' and 'type' "
                              "('Microsoft.ContainerRegistry/registries').")
        if not NAME.match(name):
            return JSONResponse({"nameAvailable": False, "reason": "Invalid", "message": NAME_RULE})
        async with ctx.services.store.read() as tx:
            owner = await _name_owner(tx, name)
        if owner is not None:
            return JSONResponse({"nameAvailable": False, "reason": "AlreadyExists",
                                 "message": f"The registry {name} is already in use."})
        return JSONResponse({"nameAvailable": True})

    def _admin(self, resource: Resource) -> dict[str, str]:
        if not (resource.body.get("properties") or {}).get("adminUserEnabled"):
            raise bad_request("UnAuthorizedForCredentialOperations",
                              f"Cannot perform credential operations for {resource.id} as admin user is disabled. "
                              "Kindly enable admin user as per docs: https://docs.microsoft.com/en-us/azure/"
                              "container-registry/container-registry-authentication#admin-account")
        return (resource.body.get(SECRETS) or {}).get("admin") or {}

    def _credentials(self, resource: Resource) -> JSONResponse:
        admin = self._admin(resource)
        return JSONResponse({"username": resource.name, "passwords": [
            {"name": n, "value": admin.get(n, "")} for n in ("password", "password2")]})

    async def list_credentials(self, ctx: "RequestContext", resource: Resource) -> Response:
        _require_post(ctx)
        return self._credentials(resource)

    async def regenerate_credential(self, ctx: "RequestContext", resource: Resource) -> Response:
        _require_post(ctx)
        self._admin(resource)
        which = (await ctx.object_body()).get("name")
        if which not in ("password", "password2"):
            raise bad_request("InvalidRequestContent", "'name' must be 'password' or 'password2'.", "name")
        async with ctx.services.store.write() as tx:
            current = await tx.get_resource(resource.key) or resource
            secrets = dict(current.body.get(SECRETS) or {})
            secrets["admin"] = {**(secrets.get("admin") or {}), which: new_password()}
            current.body[SECRETS] = secrets
            await tx.put_resource(current)
            await tx.add_event(current.key, "CredentialRegenerated", f"{which} regenerated by {ctx.caller.app_id}")
        return self._credentials(current)

    async def generate_credentials(self, ctx: "RequestContext", resource: Resource) -> Response:
        """POST …/registries/{r}/generateCredentials {"tokenId", "name"?, "expiry"?}: new token passwords."""
        _require_post(ctx)
        body = await ctx.object_body()
        token_key = str(body.get("tokenId") or "").lower()
        if not token_key.startswith(resource.key + "/tokens/"):
            raise bad_request("InvalidRequestContent", "'tokenId' must be the id of a token of this registry.",
                              "tokenId")
        which = body.get("name")
        names = [which] if which in ("password1", "password2") else ["password1", "password2"]
        expiry = body.get("expiry")
        expiry_ts = _parse_time(expiry) if expiry else None
        now = time.time()
        issued = []
        async with ctx.services.store.write() as tx:
            token = await tx.get_resource(token_key)
            if token is None:
                raise ArmError(404, "TokenNotFound", f"The token {token_key.rsplit('/', 1)[-1]} does not exist.")
            secrets = dict(token.body.get(SECRETS) or {})
            passwords = dict(secrets.get("passwords") or {})
            for name in names:
                value = new_password()
                passwords[name] = {**hash_password(value), "creationTime": iso(now), "expiry": expiry,
                                   "expiryTs": expiry_ts}
                issued.append({"creationTime": iso(now), "name": name, "value": value,
                               **({"expiry": expiry} if expiry else {})})
            secrets["passwords"] = passwords
            token.body[SECRETS] = secrets
            token.body["properties"]["credentials"] = password_view(passwords)
            await tx.put_resource(token)
            await tx.add_event(token.key, "CredentialsGenerated", f"{', '.join(names)} generated by "
                               f"{ctx.caller.app_id}")
        return JSONResponse({"username": token.name, "passwords": issued})


def password_view(passwords: dict[str, Any]) -> dict[str, Any]:
    return {"certificates": [], "passwords": [
        {"name": n, "creationTime": p.get("creationTime"), **({"expiry": p["expiry"]} if p.get("expiry") else {})}
        for n, p in sorted(passwords.items())]}


def _parse_time(value: Any) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise bad_request("InvalidRequestContent", f"'expiry' {value!r} is not an ISO 8601 time.", "expiry") from None


def _require_post(ctx: "RequestContext") -> None:
    if ctx.method != "POST":
        raise ArmError(405, "MethodNotAllowed", f"The requested resource does not support http method '{ctx.method}'.")
