"""Registry authentication as ACR does it.

- `POST /oauth2/exchange`: an AAD token (audience https://containerregistry.azure.net) of a principal
  with a role on the registry's subscription becomes an ACR refresh token (what `az acr login`
  prints and `docker login -u 00000000-0000-0000-0000-000000000000` uses as password).
- `GET|POST /oauth2/token`: a refresh token, admin user/password, a scoped token's name/password or
  (for anonymous-pull registries) nobody, plus requested scopes, become an access token whose
  `access` claim holds only the actions that identity may perform.
- every data-plane request: a bearer access token, or Basic credentials directly.
All tokens are JWTs signed with kumo's key and expire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request

from kumo.identity.tokens import TokenError, TokenSigner, normalise_audience
from kumo.registry.errors import RegistryError, denied
from kumo.registry.target import SECRETS, Target
from kumo.store import Resource, Store

ACR_AUDIENCE = "https://containerregistry.azure.net"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
ALL_ACTIONS = frozenset({"pull", "push", "delete", "metadata_read", "metadata_write"})
READ_ACTIONS = frozenset({"pull", "metadata_read"})
SCOPE_MAP_ACTIONS = {"content/read": "pull", "content/write": "push", "content/delete": "delete",
                     "metadata/read": "metadata_read", "metadata/write": "metadata_write"}
ACCESS_LIFETIME = 3600
REFRESH_LIFETIME = 3 * 3600

Need = tuple[str, str, str]  # (resource type, name, action): ("repository", "app", "push")


def hash_password(password: str) -> dict[str, str]:
    salt = secrets.token_hex(16)
    return {"salt": salt, "hash": hashlib.sha256((salt + password).encode()).hexdigest()}


def check_password(password: str, record: dict[str, Any]) -> bool:
    digest = hashlib.sha256((str(record.get("salt", "")) + password).encode()).hexdigest()
    return hmac.compare_digest(digest, str(record.get("hash", "")))


def new_password() -> str:
    return secrets.token_urlsafe(33)


@dataclass(frozen=True)
class Identity:
    kind: str  # aad | admin | token | anonymous
    subject: str
    rules: tuple[tuple[str, frozenset[str]], ...]  # (repository pattern, actions); "*" matches any
    catalog: bool = False

    def actions(self, repo: str) -> frozenset[str]:
        out: set[str] = set()
        for pattern, acts in self.rules:
            if pattern in ("*", repo) or (pattern.endswith("/*") and repo.startswith(pattern[:-1])):
                out |= acts
        return frozenset(out)

    def allows(self, need: Need) -> bool:
        kind, name, action = need
        if kind == "registry":
            return self.catalog
        return action in self.actions(name)


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind.split("(")[0], name, [a for a in actions.split(",") if a]


class RegistryAuth:
    def __init__(self, signer: TokenSigner, store: Store) -> None:
        self.signer = signer
        self.store = store
        self._public = RSAAlgorithm.from_jwk(signer.jwks()["keys"][0])

    # -- kumo's own registry tokens -------------------------------------------------------------
    def sign(self, target: Target, typ: str, subject: str, lifetime: int, **extra: Any) -> tuple[str, int]:
        now = int(time.time())
        claims = {"iss": "kumo", "aud": target.login_server, "sub": subject, "iat": now, "nbf": now,
                  "exp": now + lifetime, "jti": uuid.uuid4().hex, "typ": typ, "registry": target.name, **extra}
        return self.signer.sign(claims), now + lifetime

    def _decode(self, target: Target, token: str, typ: str) -> dict[str, Any] | None:
        try:
            claims = jwt.decode(token, self._public, algorithms=["RS256"], audience=target.login_server,
                                leeway=30)
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != typ or claims.get("registry") != target.name:
            return None
        return claims

    # -- identities ------------------------------------------------------------------------------
    async def _registry(self, target: Target) -> Resource | None:
        if target.key is None:
            return None
        async with self.store.read() as tx:
            return await tx.get_resource(target.key)

    async def aad_identity(self, target: Target, object_id: str, tenant_id: str) -> Identity | None:
        """A principal's rights on the registry: from its roles on the scopes above it."""
        registry = await self._registry(target)
        if registry is None:
            return None
        async with self.store.read() as tx:
            sub = await tx.get_subscription(registry.subscription_id)
            principal = await tx.get_principal(object_id)
            assignments = await tx.role_assignments_of(object_id.lower()) if principal else []
        if sub is None or principal is None or sub.tenant_id != tenant_id.lower():
            return None
        rid = registry.id.lower()
        roles = {a.role for a in assignments if rid == a.scope.lower() or rid.startswith(a.scope.lower() + "/")}
        if roles & {"Owner", "Contributor"}:
            return Identity("aad", object_id, (("*", ALL_ACTIONS),), catalog=True)
        if roles:
            return Identity("aad", object_id, (("*", READ_ACTIONS),), catalog=True)
        return None

    async def basic_identity(self, target: Target, username: str, password: str) -> Identity | None:
        if username == EMPTY_GUID:
            claims = self._decode(target, password, "acr_refresh")
            return await self.aad_identity(target, claims["sub"], claims["tid"]) if claims else None
        registry = await self._registry(target)
        if registry is None:
            return None
        props = registry.body.get("properties") or {}
        if username.lower() == registry.name.lower() and props.get("adminUserEnabled"):
            stored = (registry.body.get(SECRETS) or {}).get("admin") or {}
            if any(hmac.compare_digest(password, v) for v in stored.values() if isinstance(v, str)):
                return Identity("admin", registry.name, (("*", ALL_ACTIONS),), catalog=True)
            return None
        return await self._token_identity(registry, username, password)

    async def _token_identity(self, registry: Resource, name: str, password: str) -> Identity | None:
        async with self.store.read() as tx:
            token = await tx.get_resource(f"{registry.key}/tokens/{name.lower()}")
            props = (token.body.get("properties") or {}) if token else {}
            scope_map = await tx.get_resource(str(props.get("scopeMapId", "")).lower()) if token else None
        if token is None or scope_map is None or str(props.get("status", "enabled")).lower() != "enabled":
            return None
        now = time.time()
        valid = [r for r in ((token.body.get(SECRETS) or {}).get("passwords") or {}).values()
                 if check_password(password, r) and (not r.get("expiryTs") or r["expiryTs"] > now)]
        if not valid:
            return None
        rules: dict[str, set[str]] = {}
        for action in (scope_map.body.get("properties") or {}).get("actions") or []:
            parts = str(action).split("/")
            if len(parts) >= 4 and parts[0] == "repositories":
                mapped = SCOPE_MAP_ACTIONS.get("/".join(parts[-2:]))
                if mapped:
                    rules.setdefault("/".join(parts[1:-2]), set()).add(mapped)
        return Identity("token", token.name, tuple((p, frozenset(a)) for p, a in rules.items()))

    # -- endpoints ---------------------------------------------------------------------------------
    async def exchange(self, target: Target, form: dict[str, str]) -> dict[str, Any]:
        """POST /oauth2/exchange: AAD access token -> ACR refresh token."""
        if form.get("grant_type") not in ("access_token", "access_token_refresh_token"):
            raise RegistryError(400, "UNSUPPORTED", "grant_type must be access_token")
        if target.key is None:
            raise RegistryError(400, "UNSUPPORTED", "this registry takes no AAD logins (anonymous pull only)")
        try:
            claims = self.signer.verify(form.get("access_token", ""), {normalise_audience(ACR_AUDIENCE)})
        except TokenError as e:
            raise RegistryError(401, "UNAUTHORIZED", f"the AAD access token is invalid: {e.message}") from None
        identity = await self.aad_identity(target, claims["oid"], claims["tid"])
        if identity is None:
            raise RegistryError(401, "UNAUTHORIZED", f"the principal {claims['oid']} has no role that grants access "
                                f"to registry {target.name}")
        token, _ = self.sign(target, "acr_refresh", claims["oid"], REFRESH_LIFETIME, tid=claims["tid"])
        return {"refresh_token": token}

    async def token(self, target: Target, request: Request) -> dict[str, Any]:
        """GET|POST /oauth2/token: an access token for the requested scopes."""
        if request.method == "POST":
            form = await request.form()
            values = {k: str(v) for k, v in form.items()}
            scopes = [s for v in form.getlist("scope") for s in str(v).split(" ") if s]
        else:
            values = dict(request.query_params)
            scopes = [s for v in request.query_params.getlist("scope") for s in v.split(" ") if s]
        grant = values.get("grant_type")
        if grant == "refresh_token":
            identity = await self.basic_identity(target, EMPTY_GUID, values.get("refresh_token", ""))
        elif grant == "password":
            identity = await self.basic_identity(target, values.get("username", ""), values.get("password", ""))
        elif (basic := _basic(request)) is not None:
            identity = await self.basic_identity(target, *basic)
        elif target.anonymous_pull:
            identity = Identity("anonymous", "", (("*", READ_ACTIONS),), catalog=True)
        else:
            identity = None
        if identity is None:
            raise RegistryError(401, "UNAUTHORIZED", "authentication required, the credentials are invalid")
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            if kind == "registry":
                granted = ["*"] if identity.catalog else []
            else:
                allowed = identity.actions(name)
                if target.read_only:
                    allowed = allowed & READ_ACTIONS
                granted = [a for a in wanted if a in allowed or (a == "*" and allowed >= ALL_ACTIONS)]
            access.append({"type": kind, "name": name, "actions": granted})
        token, exp = self.sign(target, "acr_access", identity.subject or "anonymous", ACCESS_LIFETIME,
                                access=access, kind=identity.kind)
        body: dict[str, Any] = {"access_token": token}
        if request.method == "GET":  # docker's token protocol also reads `token`
            body.update(token=token, expires_in=exp - int(time.time()),
                        issued_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return body

    async def authorize(self, target: Target, request: Request, needs: list[Need]) -> None:
        """Let the request through, or raise 401 (with ACR's challenge) / 403 DENIED."""
        writes = [n for n in needs if n[2] not in READ_ACTIONS and n[0] != "registry"]
        if target.read_only and writes:
            raise denied(f"registry {target.login_server} is read-only: pushes and deletes are refused")
        if target.anonymous_pull and not writes:
            return
        header = request.headers.get("authorization") or ""
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential.strip():
            claims = self._decode(target, credential.strip(), "acr_access")
            if claims is None:
                raise self.challenge(target, request, needs, "invalid_token")
            for need in needs:
                entry = next((a for a in claims.get("access") or []
                              if a.get("type") == need[0] and a.get("name") == need[1]), None)
                if entry is None:
                    raise self.challenge(target, request, needs, "insufficient_scope")
                if need[2] not in entry.get("actions", []) and "*" not in entry.get("actions", []):
                    raise denied()
            return
        basic = _basic(request) if scheme.lower() == "basic" else None
        identity = await self.basic_identity(target, *basic) if basic else None
        if identity is None:
            raise self.challenge(target, request, needs, "invalid_token" if header else None)
        if not all(identity.allows(n) for n in needs):
            raise denied()

    @staticmethod
    def challenge(target: Target, request: Request, needs: list[Need], error: str | None) -> RegistryError:
        host = request.headers.get("host") or target.login_server
        # no space after the commas: az splits this header on spaces
        header = f'Bearer realm="https://{host}/oauth2/token",service="{target.login_server}"'
        scopes: dict[tuple[str, str], list[str]] = {}
        for kind, name, action in needs:
            scopes.setdefault((kind, name), []).append("*" if kind == "registry" else action)
        if scopes:
            header += ',scope="' + " ".join(f"{k}:{n}:{','.join(a)}" for (k, n), a in scopes.items()) + '"'
        if error:
            header += f',error="{error}"'
        detail = [{"Type": k, "Name": n, "Action": a} for k, n, a in needs] or None
        return RegistryError(401, "UNAUTHORIZED", "authentication required, visit https://aka.ms/acr/authorization "
                             "for more information.", detail, headers={"WWW-Authenticate": header})


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None
