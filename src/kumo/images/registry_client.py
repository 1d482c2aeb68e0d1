"""The pull side of the OCI distribution API: auth, manifests, and blobs verified against their digests.

One `RegistryClient` talks to any number of registries. For each endpoint it probes `GET /v2/` once to
learn the auth scheme (none, Basic, or Bearer tokens from the realm the challenge names, cached per
scope until they expire), then fetches manifests (an index resolves to the wanted platform) and blobs.
Every byte is checked: manifests and configs against their digests in memory, layers while they stream
to a temporary file that is renamed into place only when size and digest match. Errors name the image
and say what failed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import os
import re
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx

from kumo import __version__
from kumo.images.reference import DEFAULT_REGISTRY, ImageReference, InvalidReference, validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v1+prettyjws")
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

# containerd's limits: manifests and configs are read into memory, so a hostile registry may not send more.
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 16 << 20
# Blob bytes are written (and hashed, which releases the GIL) in a worker thread, this much at a time.
WRITE_BATCH = 1 << 20
# Docker Hub's API lives on another host than its name.
_HUB_ENDPOINT = "https://registry-1.docker.io"
# A token without expires_in lives 60 s (the token spec); renew a little early.
_TOKEN_DEFAULT_TTL = 60
_TOKEN_MARGIN = 10

ProgressCallback = Callable[[str, int, int], None]
"""Called with (blob digest, bytes done, bytes total) as a blob downloads."""


class PullError(Exception):
    """Pulling `image` failed; the message names the image and says what failed."""

    def __init__(self, image: ImageReference | str, what: str) -> None:
        self.image, self.what = str(image), what
        super().__init__(f"cannot pull {image}: {what}")


class ImageNotFound(PullError):
    """The registry does not know the repository, tag, digest or a blob."""


class Unauthorized(PullError):
    """Credentials are missing, wrong, or not allowed to pull this repository."""


class RegistryUnreachable(PullError):
    """No answer: connection refused, DNS, TLS or a timeout."""


class DigestMismatch(PullError):
    """Content did not match its digest or size: corrupt or tampered."""


class UnsupportedImage(PullError):
    """A manifest kind, compression or platform that kumo cannot run."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest (validated, as it becomes a file name) and size."""

    media_type: str
    digest: str
    size: int
    platform: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, image: ImageReference, raw: Any, what: str) -> Descriptor:
        if not isinstance(raw, dict):
            raise UnsupportedImage(image, f"{what} is not a descriptor object")
        digest, size = raw.get("digest"), raw.get("size")
        try:
            validate_digest(digest if isinstance(digest, str) else "")
        except InvalidReference:
            raise UnsupportedImage(image, f"{what} has an invalid digest {digest!r}") from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UnsupportedImage(image, f"{what} {digest} has an invalid size {size!r}")
        platform = raw.get("platform")
        return cls(str(raw.get("mediaType", "")), digest, size, platform if isinstance(platform, dict) else None)


@dataclass(frozen=True)
class Manifest:
    """An image manifest for one platform; `index_digest` is set when it was picked from an index."""

    digest: str
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    index_digest: str | None = None


@dataclass
class _Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


def parse_challenge(header: str) -> _Challenge | None:
    """Parse `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` (or Basic)."""
    m = re.match(r"\s*([A-Za-z]+)\s*(.*)", header or "")
    if not m:
        return None
    params = {k.lower(): v[1:-1].replace('\\"', '"') if v.startswith('"') else v
              for k, v in re.findall(r'([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|[^,\s]*)', m.group(2))}
    return _Challenge(m.group(1).lower(), params)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(registry: str) -> str:
    """`host:port` or `[v6]:port` → host."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


class RegistryClient:
    """An async registry client for pulling. Use as `async with RegistryClient(...) as c:` or `aclose()`.

    `mirrors` maps a registry name as it appears in references (`docker.io`, `mcr.microsoft.com`) to the
    endpoint that serves it instead (`http://127.0.0.1:5000`, `mirror.example:443`); a mirror replaces
    the registry, with no fallback to it, so an offline host never reaches out. An endpoint without a
    scheme, and every registry, is HTTPS unless its host is loopback, which is plain HTTP (as docker
    treats 127.0.0.0/8 as insecure). `credentials` is keyed by the endpoint's `host[:port]` or by the
    registry name. `ca_bundle` is a PEM file of CAs trusted instead of the default (certifi) ones.
    Build one client and keep it: construction loads CA files, which blocks briefly.
    """

    def __init__(self, *, credentials: Mapping[str, Credentials] | None = None,
                 mirrors: Mapping[str, str] | None = None, ca_bundle: str | os.PathLike[str] | None = None,
                 timeout: float = 30.0, connect_timeout: float = 10.0, platform: Platform = Platform(),
                 user_agent: str = f"kumo/{__version__}") -> None:
        self.credentials = dict(credentials or {})
        self.mirrors = {k: self._normalise_endpoint(v) for k, v in (mirrors or {}).items()}
        self.platform = platform
        verify: ssl.SSLContext | bool = True
        if ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(ca_bundle))
        self._http = httpx.AsyncClient(
            verify=verify, follow_redirects=True, headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(timeout, connect=connect_timeout))
        self._challenges: dict[str, _Challenge | None] = {}
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._auth_locks: dict[str, asyncio.Lock] = {}
        self.token_requests = 0  # how many tokens were fetched (the cache is observable in tests)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- endpoints ---------------------------------------------------------------------------------

    @staticmethod
    def _normalise_endpoint(value: str) -> str:
        if "://" not in value:
            value = ("http://" if is_loopback(_host_of(value.split("/", 1)[0])) else "https://") + value
        scheme = urlsplit(value).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"registry endpoint {value!r} must be http:// or https://")
        return value.rstrip("/")

    def endpoint(self, registry: str) -> str:
        """The base URL (without /v2) that serves `registry`."""
        if registry in self.mirrors:
            return self.mirrors[registry]
        if registry == DEFAULT_REGISTRY:
            return _HUB_ENDPOINT
        return self._normalise_endpoint(registry)

    def _credentials_for(self, image: ImageReference, endpoint: str) -> Credentials | None:
        return self.credentials.get(urlsplit(endpoint).netloc) or self.credentials.get(image.registry)

    # -- auth --------------------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._auth_locks.setdefault(key, asyncio.Lock())

    async def ping(self, image: ImageReference) -> None:
        """`GET /v2/` on the image's endpoint: reachable, a v2 registry, and which auth it wants."""
        await self._challenge(image, self.endpoint(image.registry))

    async def _challenge(self, image: ImageReference, endpoint: str) -> _Challenge | None:
        async with self._lock(endpoint):
            if endpoint not in self._challenges:
                resp = await self._send(image, endpoint, self._http.build_request("GET", f"{endpoint}/v2/"))
                if resp.status_code == 401:
                    challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
                    if challenge is None or challenge.scheme not in ("basic", "bearer"):
                        raise Unauthorized(image, f"registry at {endpoint} asks for unsupported auth "
                                                  f"{resp.headers.get('www-authenticate')!r}")
                    self._challenges[endpoint] = challenge
                elif resp.status_code == 200:
                    self._challenges[endpoint] = None
                elif resp.status_code == 404:
                    raise PullError(image, f"{endpoint}/v2/ answered HTTP 404; is it an OCI/Docker v2 registry?")
                else:
                    raise PullError(image, f"registry at {endpoint} answered HTTP {resp.status_code} to /v2/")
            return self._challenges[endpoint]

    async def _authorization(self, image: ImageReference, endpoint: str, scope: str,
                             challenge: _Challenge | None, renew: bool = False) -> dict[str, str]:
        if challenge is None:
            return {}
        creds = self._credentials_for(image, endpoint)
        if challenge.scheme == "basic":
            if creds is None:
                raise Unauthorized(image, f"registry at {endpoint} requires credentials and none were given")
            raw = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        realm = challenge.params.get("realm")
        if not realm:
            raise Unauthorized(image, f"registry at {endpoint} sent a Bearer challenge without a realm")
        service = challenge.params.get("service", "")
        key = (realm, service, scope, creds.username if creds else "")
        async with self._lock("token:" + "\0".join(key)):
            cached = self._tokens.get(key)
            if cached and not renew and cached[1] > time.monotonic():
                return {"Authorization": f"Bearer {cached[0]}"}
            token, ttl = await self._fetch_token(image, realm, service, scope, creds)
            self._tokens[key] = (token, time.monotonic() + max(ttl - _TOKEN_MARGIN, 1))
            return {"Authorization": f"Bearer {token}"}

    async def _fetch_token(self, image: ImageReference, realm: str, service: str, scope: str,
                           creds: Credentials | None) -> tuple[str, int]:
        params = {"scope": scope, **({"service": service} if service else {})}
        auth = httpx.BasicAuth(creds.username, creds.password) if creds else None
        try:
            resp = await self._http.get(realm, params=params, auth=auth)
        except httpx.TimeoutException as exc:
            raise RegistryUnreachable(image, f"token server {realm} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RegistryUnreachable(image, f"cannot reach token server {realm}: {exc}") from exc
        self.token_requests += 1
        if resp.status_code in (401, 403):
            who = f"as {creds.username!r}" if creds else "anonymously"
            raise Unauthorized(image, f"token server {realm} refused a token {who} for {scope} "
                                      f"(HTTP {resp.status_code}{_error_detail(resp)}); check the credentials")
        if resp.status_code != 200:
            raise PullError(image, f"token server {realm} answered HTTP {resp.status_code}{_error_detail(resp)}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            ttl = int(body.get("expires_in") or _TOKEN_DEFAULT_TTL)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PullError(image, f"token server {realm} answered without a token")
        return token, ttl

    # -- requests ----------------------------------------------------------------------------------

    async def _send(self, image: ImageReference, endpoint: str, request: httpx.Request,
                    stream: bool = False) -> httpx.Response:
        try:
            return await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise RegistryUnreachable(image, f"registry at {endpoint} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise RegistryUnreachable(image, f"cannot reach registry at {endpoint}: {exc or type(exc).__name__}"
                                      ) from exc

    async def _get(self, image: ImageReference, path: str, headers: Mapping[str, str] | None = None,
                   stream: bool = False) -> httpx.Response:
        """GET `path` under the image's repository, authenticating as its endpoint asks (once more on 401)."""
        endpoint = self.endpoint(image.registry)
        challenge = await self._challenge(image, endpoint)
        scope = f"repository:{image.repository}:pull"
        auth = await self._authorization(image, endpoint, scope, challenge)
        url = f"{endpoint}/v2/{image.repository}/{path}"
        resp = await self._send(image, endpoint, self._http.build_request(
            "GET", url, headers={**(headers or {}), **auth}), stream)
        if resp.status_code == 401:
            await resp.aread()
            await resp.aclose()
            retry = await self._reauthorize(image, endpoint, scope, challenge,
                                            parse_challenge(resp.headers.get("www-authenticate", "")))
            if retry is not None:
                resp = await self._send(image, endpoint, self._http.build_request(
                    "GET", url, headers={**(headers or {}), **retry}), stream)
        if resp.status_code >= 400:
            if stream:
                await resp.aread()
            await resp.aclose()
            raise self._status_error(image, resp, path)
        return resp

    async def _reauthorize(self, image: ImageReference, endpoint: str, scope: str, probed: _Challenge | None,
                           fresh: _Challenge | None) -> dict[str, str] | None:
        """After a 401 on a resource: the headers for one more try, or None if another try cannot help.

        A Bearer token may have expired or the resource may want another scope (its challenge names it);
        a registry whose /v2/ was open may still protect repositories.
        """
        if fresh is None:
            return None
        if fresh.scheme == "bearer" and fresh.params.get("realm"):
            return await self._authorization(image, endpoint, fresh.params.get("scope") or scope, fresh, renew=True)
        if fresh.scheme == "basic" and (probed is None or probed.scheme != "basic"):
            return await self._authorization(image, endpoint, scope, fresh)
        return None

    def _status_error(self, image: ImageReference, resp: httpx.Response, path: str) -> PullError:
        what = "manifest" if path.startswith("manifests/") else f"blob {path.removeprefix('blobs/')}"
        detail = _error_detail(resp)
        code = resp.status_code
        if code == 404:
            if what == "manifest":
                return ImageNotFound(image, f"not found: the registry has no such repository, tag or digest{detail}")
            return ImageNotFound(image, f"{what} not found in the registry{detail}")
        if code == 401:
            creds = self._credentials_for(image, self.endpoint(image.registry))
            hint = "the credentials were refused" if creds else "the registry requires credentials"
            return Unauthorized(image, f"unauthorized: {hint} (or the repository does not exist){detail}")
        if code == 403:
            return Unauthorized(image, f"access denied to {image.repository}{detail}")
        if code == 429:
            return PullError(image, f"the registry is rate limiting pulls (HTTP 429){detail}")
        return PullError(image, f"fetching the {what} failed with HTTP {code}{detail}")

    # -- manifests ---------------------------------------------------------------------------------

    async def _fetch_manifest(self, image: ImageReference, reference: str) -> tuple[bytes, str, str]:
        resp = await self._get(image, f"manifests/{reference}", {"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            body = await _read_limited(image, resp, MAX_MANIFEST_BYTES, "manifest")
        finally:
            await resp.aclose()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = reference if reference.startswith(("sha256:", "sha512:")) else None
        if expected and expected.startswith("sha512:"):
            digest = "sha512:" + hashlib.sha512(body).hexdigest()
        header = resp.headers.get("docker-content-digest")
        if expected is None and header and header.startswith("sha256:") and header != digest:
            raise DigestMismatch(image, f"manifest content has digest {digest} but the registry says {header}")
        if expected is not None and digest != expected:
            raise DigestMismatch(image, f"manifest content has digest {digest}, not the requested {expected}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return body, media_type, digest

    async def get_manifest(self, image: ImageReference) -> Manifest:
        """The image manifest for `self.platform`, resolving an index (manifest list) to its entry."""
        body, header_type, digest = await self._fetch_manifest(image, image.reference)
        doc, media_type = self._decode_manifest(image, body, header_type)
        if media_type not in INDEX_TYPES:
            return self._image_manifest(image, doc, media_type, digest, body)
        chosen = self.pick_platform(image, doc)
        body, header_type, child_digest = await self._fetch_manifest(image, chosen.digest)
        if len(body) != chosen.size:
            raise DigestMismatch(image, f"manifest {chosen.digest} is {len(body)} bytes, the index says {chosen.size}")
        doc, media_type = self._decode_manifest(image, body, header_type or chosen.media_type)
        if media_type in INDEX_TYPES:
            raise UnsupportedImage(image, f"index entry {chosen.digest} for {self.platform} is itself an index")
        return self._image_manifest(image, doc, media_type, child_digest, body, index_digest=digest)

    def _decode_manifest(self, image: ImageReference, body: bytes, header_type: str) -> tuple[dict[str, Any], str]:
        try:
            doc = json.loads(body)
        except ValueError:
            raise UnsupportedImage(image, "the manifest is not JSON") from None
        if not isinstance(doc, dict):
            raise UnsupportedImage(image, "the manifest is not a JSON object")
        media_type = doc.get("mediaType") or header_type
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            # OCI allows mediaType to be absent; the shape tells.
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST if "layers" in doc else media_type
        if media_type in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise UnsupportedImage(image, "Docker schema 1 manifests are not supported (push it again with a "
                                          "current client)")
        if media_type not in INDEX_TYPES + MANIFEST_TYPES:
            raise UnsupportedImage(image, f"unknown manifest type {media_type!r}")
        return doc, media_type

    def pick_platform(self, image: ImageReference, index: Mapping[str, Any]) -> Descriptor:
        """The index entry for `self.platform` (a matching variant preferred, as containerd does)."""
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise UnsupportedImage(image, "the index has no manifests list")
        want = self.platform
        candidates, seen = [], []
        for i, raw in enumerate(entries):
            desc = Descriptor.parse(image, raw, f"index entry {i}")
            p = desc.platform or {}
            seen.append("/".join(str(x) for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x))
            if p.get("os") == want.os and p.get("architecture") == want.architecture:
                candidates.append(desc)
        if want.variant:
            exact = [d for d in candidates if (d.platform or {}).get("variant") == want.variant]
            candidates = exact or [d for d in candidates if not (d.platform or {}).get("variant")]
        if not candidates:
            raise UnsupportedImage(image, f"no {want} image in the index (it has: {', '.join(seen) or 'nothing'})")
        return candidates[0]

    def _image_manifest(self, image: ImageReference, doc: Mapping[str, Any], media_type: str, digest: str,
                        raw: bytes, index_digest: str | None = None) -> Manifest:
        config = Descriptor.parse(image, doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise UnsupportedImage(image, "the manifest has no layers list")
        parsed = tuple(Descriptor.parse(image, layer, f"layer {i}") for i, layer in enumerate(layers))
        return Manifest(digest, media_type, config, parsed, raw, index_digest)

    # -- blobs -------------------------------------------------------------------------------------

    async def get_blob(self, image: ImageReference, desc: Descriptor, limit: int = MAX_CONFIG_BYTES) -> bytes:
        """A small blob (an image config) in memory, checked against its size and digest."""
        if desc.size > limit:
            raise UnsupportedImage(image, f"blob {desc.digest} is {desc.size} bytes, more than {limit} allowed")
        resp = await self._get(image, f"blobs/{desc.digest}", stream=True)
        try:
            body = await _read_limited(image, resp, desc.size, f"blob {desc.digest}")
        finally:
            await resp.aclose()
        actual = _hasher(desc.digest)
        actual.update(body)
        _check(image, desc, len(body), actual)
        return body

    async def download_blob(self, image: ImageReference, desc: Descriptor, dest: Path,
                            progress: ProgressCallback | None = None) -> None:
        """Stream a blob to `dest`, verified; on any failure `dest` is untouched and no partial file is left."""
        resp = await self._get(image, f"blobs/{desc.digest}", stream=True)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.partial")
        hasher = _hasher(desc.digest)
        done = 0
        file: BinaryIO | None = None
        try:
            file = await asyncio.to_thread(_open_exclusive, partial)
            if progress:
                progress(desc.digest, 0, desc.size)
            buf = bytearray()
            try:
                async for chunk in resp.aiter_bytes():
                    done += len(chunk)
                    if done > desc.size:
                        raise DigestMismatch(image, f"blob {desc.digest} is longer than its {desc.size} bytes")
                    buf += chunk
                    if len(buf) >= WRITE_BATCH:
                        await asyncio.to_thread(_write_and_hash, file, hasher, bytes(buf))
                        buf.clear()
                        if progress:
                            progress(desc.digest, done, desc.size)
            except httpx.TimeoutException as exc:
                raise RegistryUnreachable(image, f"download of blob {desc.digest} timed out after {done} bytes"
                                          ) from exc
            except httpx.TransportError as exc:
                raise RegistryUnreachable(image, f"download of blob {desc.digest} broke off after {done} bytes: "
                                                 f"{exc}") from exc
            await asyncio.to_thread(_write_and_hash, file, hasher, bytes(buf), True)
            _check(image, desc, done, hasher)
            file = None
            await asyncio.to_thread(os.replace, partial, dest)
            if progress:
                progress(desc.digest, done, desc.size)
        finally:
            await resp.aclose()
            if file is not None:
                await asyncio.to_thread(file.close)
            await asyncio.to_thread(partial.unlink, missing_ok=True)


def _hasher(digest: str) -> Any:
    return hashlib.new(digest.split(":", 1)[0])


def _check(image: ImageReference, desc: Descriptor, size: int, hasher: Any) -> None:
    if size != desc.size:
        raise DigestMismatch(image, f"blob {desc.digest} is {size} bytes, the manifest says {desc.size}")
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != desc.digest:
        raise DigestMismatch(image, f"blob {desc.digest} failed verification: its content has digest {actual} "
                                    "(corrupt or tampered)")


def _open_exclusive(path: Path) -> BinaryIO:
    return open(path, "xb")  # noqa: SIM115 - closed by the caller once the last batch is written


def _write_and_hash(file: BinaryIO, hasher: Any, data: bytes, close: bool = False) -> None:
    hasher.update(data)
    file.write(data)
    if close:
        file.close()


async def _read_limited(image: ImageReference, resp: httpx.Response, limit: int, what: str) -> bytes:
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise UnsupportedImage(image, f"the {what} is larger than {limit} bytes")
    return bytes(body)


def _error_detail(resp: httpx.Response) -> str:
    """The registry's own error codes (`MANIFEST_UNKNOWN: manifest unknown`), if the body has them."""
    try:
        errors = json.loads(resp.content).get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        return ""
    return f" ({text})" if text else ""
