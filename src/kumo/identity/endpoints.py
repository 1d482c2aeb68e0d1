"""The identity endpoints clients log in through: OIDC discovery, JWKS, the v2.0 (and v1) token
endpoint, a user-realm answer for ROPC, and an App Service style managed-identity endpoint."""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kumo.config import Settings
from kumo.identity.directory import DefaultIdentity, verify_secret_async
from kumo.identity.tokens import REFRESH_LIFETIME, TokenError, TokenSigner, normalise_audience
from kumo.store import Principal, Store

ACR_AUDIENCE = "https://containerregistry.azure.net"
GRAPH_LIKE_SCOPES = {"openid", "profile", "offline_access", "email"}


class OAuthError(Exception):
    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.aadsts, self.description = status, error, aadsts, description

    def response(self) -> JSONResponse:
        return JSONResponse({
            "error": self.error, "error_description": f"AADSTS{self.aadsts}: {self.description}",
            "error_codes": [self.aadsts], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4()),
        }, status_code=self.status)


def arm_audiences(settings: Settings) -> set[str]:
    """The audiences an ARM token may carry: Azure's public ARM names and kumo's own endpoints."""
    names = ["https://management.azure.com/", "https://management.core.windows.net/"]
    names += [f"https://{h}:{settings.port}/" for h in settings.tls_names() if ":" not in h]
    names += [settings.endpoint]
    return {normalise_audience(n) for n in names}


@dataclass
class IdentityService:
    settings: Settings
    store: Store
    signer: TokenSigner
    default: DefaultIdentity
    msi_secret: str

    def __post_init__(self) -> None:
        self.arm_audiences = arm_audiences(self.settings)
        self.known_audiences = self.arm_audiences | {normalise_audience(ACR_AUDIENCE)}

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def base_url(request: Request) -> str:
        return f"https://{request.headers.get('host', request.url.netloc)}"

    async def resolve_tenant(self, tenant: str) -> str | None:
        """`common`/`organizations`/a domain mean the default tenant; a GUID must exist."""
        t = tenant.lower()
        if t in ("common", "organizations", "consumers") or "." in t:
            return self.default.tenant_id
        async with self.store.read() as tx:
            found = await tx.get_tenant(t)
        return found.id if found else None

    def audience_for(self, scopes: list[str], resource: str | None) -> str:
        if resource:
            wanted = [resource]
        else:
            wanted = [sc[: -len("/.default")] for sc in scopes if sc.endswith("/.default")]
            wanted += [sc for sc in scopes if sc not in GRAPH_LIKE_SCOPES and not sc.endswith("/.default")]
        for aud in wanted:
            if normalise_audience(aud) in self.known_audiences:
                return aud
        raise OAuthError(400, "invalid_resource", 500011,
                         f"The resource principal named {' '.join(wanted) or '(none)'} was not found in the "
                         f"tenant. kumo issues tokens for ARM ({self.settings.endpoint}) and ACR ({ACR_AUDIENCE}).")

    async def authenticate_client(self, client_id: str, secret: str | None, tenant_id: str) -> Principal:
        """A registered principal must present its secret; any other client id logs in as the default
        principal unless strict auth is on."""
        async with self.store.read() as tx:
            principal = await tx.principal_by_app_id(client_id) if client_id else None
            default = await tx.get_principal(self.default.object_id)
        if principal is None:
            if self.settings.strict_auth or default is None:
                raise OAuthError(400, "unauthorized_client", 700016,
                                 f"Application with identifier '{client_id}' was not found in the directory "
                                 f"'{tenant_id}'. Register it with `kumo sp create`.")
            return default
        if not secret or not await verify_secret_async(secret, principal.secret_hash):
            raise OAuthError(401, "invalid_client", 7000215,
                             "Invalid client secret provided. Ensure the secret being sent in the request "
                             f"is the client secret value for app '{client_id}'.")
        if principal.object_id != self.default.object_id and principal.tenant_id != tenant_id:
            raise OAuthError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory "
                             f"'{tenant_id}'.")
        return principal

    async def authenticate_user(self, username: str, password: str, tenant_id: str) -> Principal:
        async with self.store.read() as tx:
            principal = await tx.principal_by_name(username) or await tx.principal_by_app_id(username)
            default = await tx.get_principal(self.default.object_id)
        if principal is None:
            if self.settings.strict_auth or default is None:
                raise OAuthError(400, "invalid_grant", 50034, f"The user account {username} does not exist "
                                 f"in the {tenant_id} directory.")
            return default
        if not await verify_secret_async(password, principal.secret_hash):
            raise OAuthError(400, "invalid_grant", 50126, "Error validating credentials due to invalid "
                             "username or password.")
        return principal

    def token_response(self, request: Request, principal: Principal, tenant_id: str, audience: str,
                       *, with_user_tokens: bool) -> dict[str, Any]:
        issuer = f"{self.base_url(request)}/{tenant_id}/v2.0"
        token, exp = self.signer.issue(issuer=issuer, tenant_id=tenant_id, object_id=principal.object_id,
                                       app_id=principal.app_id, audience=audience,
                                       extra={"name": principal.display_name, "idtyp": "app"})
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": exp - int(time.time()),
                                "ext_expires_in": exp - int(time.time()), "access_token": token,
                                "scope": audience.rstrip("/") + "/.default"}
        if with_user_tokens:
            refresh, _ = self.signer.issue(issuer=issuer, tenant_id=tenant_id, object_id=principal.object_id,
                                           app_id=principal.app_id, audience=issuer, lifetime=REFRESH_LIFETIME,
                                           extra={"typ": "refresh"})
            id_token, _ = self.signer.issue(issuer=issuer, tenant_id=tenant_id, object_id=principal.object_id,
                                            app_id=principal.app_id, audience=principal.app_id,
                                            extra={"preferred_username": principal.display_name,
                                                   "name": principal.display_name})
            info = json.dumps({"uid": principal.object_id, "utid": tenant_id}).encode()
            body.update(refresh_token=refresh, id_token=id_token,
                        client_info=base64.urlsafe_b64encode(info).rstrip(b"=").decode(),
                        scope=body["scope"] + " openid profile offline_access")
        return body

    # -- endpoints -------------------------------------------------------------------------
    async def openid_configuration(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        base = self.base_url(request)
        v2 = "/v2.0" if request.url.path.lower().find("/v2.0/") >= 0 else ""
        return JSONResponse({
            "issuer": f"{base}/{tenant}{v2 or ''}" + ("" if v2 else "/"),
            "authorization_endpoint": f"{base}/{tenant}/oauth2{v2}/authorize",
            "token_endpoint": f"{base}/{tenant}/oauth2{v2}/token",
            "device_authorization_endpoint": f"{base}/{tenant}/oauth2{v2}/devicecode",
            "jwks_uri": f"{base}/{tenant}/discovery{v2}/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid", "appid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "kumo",
        })

    async def keys(self, request: Request) -> Response:
        return JSONResponse(self.signer.jwks())

    async def token(self, request: Request) -> Response:
        try:
            return JSONResponse(await self._token(request))
        except OAuthError as e:
            return e.response()

    async def _token(self, request: Request) -> dict[str, Any]:
        tenant_id = await self.resolve_tenant(request.path_params["tenant"])
        if tenant_id is None:
            raise OAuthError(400, "invalid_request", 90002,
                             f"Tenant '{request.path_params['tenant']}' not found. Check to make sure you have "
                             "the correct tenant ID (`kumo status` prints the default one).")
        form = await request.form()
        grant = str(form.get("grant_type", ""))
        client_id = str(form.get("client_id", ""))
        secret = form.get("client_secret")
        if auth := request.headers.get("authorization", ""):
            if auth.lower().startswith("basic "):
                try:
                    client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                except ValueError:
                    raise OAuthError(400, "invalid_request", 900144, "Malformed Basic authorization.") from None
        scopes = str(form.get("scope", "")).split()
        resource = str(form["resource"]) if form.get("resource") else None
        if grant == "client_credentials":
            principal = await self.authenticate_client(client_id, str(secret) if secret else None, tenant_id)
            return self.token_response(request, principal, tenant_id, self.audience_for(scopes, resource),
                                       with_user_tokens=False)
        if grant == "password":
            principal = await self.authenticate_user(str(form.get("username", "")), str(form.get("password", "")),
                                                     tenant_id)
            return self.token_response(request, principal, tenant_id, self.audience_for(scopes, resource),
                                       with_user_tokens=True)
        if grant == "refresh_token":
            try:
                claims = self.signer.verify_refresh(str(form.get("refresh_token", "")))
            except TokenError as e:
                raise OAuthError(400, "invalid_grant", 9002313, e.message) from None
            async with self.store.read() as tx:
                principal = await tx.get_principal(claims["oid"])
            if principal is None:
                raise OAuthError(400, "invalid_grant", 50034, "The principal of this refresh token no longer exists.")
            return self.token_response(request, principal, claims["tid"], self.audience_for(scopes, resource),
                                       with_user_tokens=True)
        raise OAuthError(400, "unsupported_grant_type", 70003,
                         f"The app requested an unsupported grant type '{grant}'. kumo supports "
                         "client_credentials, password and refresh_token.")

    async def user_realm(self, request: Request) -> Response:
        user = request.path_params["user"]
        return JSONResponse({"ver": "1.0", "account_type": "Managed", "domain_name": user.partition("@")[2] or
                             "kumo.local", "cloud_instance_name": "kumo", "cloud_audience_urn": "urn:federation:kumo"})

    async def managed_identity(self, request: Request) -> Response:
        given = request.headers.get("x-identity-header", "")
        if not given or not hmac.compare_digest(given, self.msi_secret):
            return JSONResponse({"statusCode": 401, "message": "Missing or wrong X-IDENTITY-HEADER; `kumo env` "
                                 "prints IDENTITY_ENDPOINT and IDENTITY_HEADER."}, status_code=401)
        resource = request.query_params.get("resource", "")
        try:
            audience = self.audience_for([], resource)
        except OAuthError as e:
            return JSONResponse({"statusCode": 400, "message": e.description}, status_code=400)
        async with self.store.read() as tx:
            principal = await tx.get_principal(self.default.object_id)
        assert principal is not None
        body = self.token_response(request, principal, self.default.tenant_id, audience, with_user_tokens=False)
        exp = int(time.time()) + int(body["expires_in"])
        return JSONResponse({"access_token": body["access_token"], "expires_on": str(exp), "resource": resource,
                             "token_type": "Bearer", "client_id": principal.app_id})

    def routes(self) -> list[Route]:
        return [
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self.openid_configuration),
            Route("/{tenant}/.well-known/openid-configuration", self.openid_configuration),
            Route("/{tenant}/discovery/v2.0/keys", self.keys),
            Route("/{tenant}/discovery/keys", self.keys),
            Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
            Route("/{tenant}/oauth2/token", self.token, methods=["POST"]),
            Route("/common/userrealm/{user}", self.user_realm),
            Route("/msi/token", self.managed_identity),
        ]
