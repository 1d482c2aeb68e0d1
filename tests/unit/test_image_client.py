"""The registry client's pure parts: where a registry is served, auth challenges, platform choice."""

from __future__ import annotations

import pytest

from kumo.images.reference import parse_reference
from kumo.images.registry_client import Platform, RegistryClient, UnsupportedImage, parse_challenge

REF = parse_reference("example.com/app:1")


async def test_endpoints_and_mirrors() -> None:
    async with RegistryClient(mirrors={"docker.io": "127.0.0.1:5000", "mcr.microsoft.com": "https://mirror.test/",
                                       "quay.io": "http://10.1.2.3:80"}) as c:
        assert c.endpoint("docker.io") == "http://127.0.0.1:5000"
        assert c.endpoint("mcr.microsoft.com") == "https://mirror.test"
        assert c.endpoint("quay.io") == "http://10.1.2.3:80"  # an explicit scheme is the operator's choice
        assert c.endpoint("ghcr.io") == "https://ghcr.io"
        assert c.endpoint("myreg.test:5000") == "https://myreg.test:5000"
        assert c.endpoint("localhost:5000") == "http://localhost:5000"
        assert c.endpoint("127.0.0.2:5000") == "http://127.0.0.2:5000"
        assert c.endpoint("[::1]:5000") == "http://[::1]:5000"
    async with RegistryClient() as c:
        assert c.endpoint("docker.io") == "https://registry-1.docker.io"
    with pytest.raises(ValueError, match="must be http:// or https://"):
        RegistryClient(mirrors={"docker.io": "ftp://x"})


def test_challenges() -> None:
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                        'scope="repository:library/nginx:pull,push",error="insufficient_scope"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/nginx:pull,push", "error": "insufficient_scope"}
    basic = parse_challenge('Basic realm="kumo"')
    assert basic is not None and basic.scheme == "basic" and basic.params == {"realm": "kumo"}
    assert parse_challenge("") is None


def _entry(arch: str, variant: str | None = None, n: int = 0) -> dict[str, object]:
    platform = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{n:064x}", "size": 10,
            "platform": platform}


async def test_platform_choice() -> None:
    index = {"manifests": [_entry("arm", "v6", 1), _entry("arm", "v7", 2), _entry("amd64", None, 3),
                           _entry("arm64", "v8", 4)]}
    async with RegistryClient() as c:
        assert c.pick_platform(REF, index).digest == f"sha256:{3:064x}"
    async with RegistryClient(platform=Platform("linux", "arm", "v7")) as c:
        assert c.pick_platform(REF, index).digest == f"sha256:{2:064x}"
    async with RegistryClient(platform=Platform("linux", "arm64")) as c:
        assert c.pick_platform(REF, index).digest == f"sha256:{4:064x}"
    async with RegistryClient(platform=Platform("linux", "s390x")) as c:
        with pytest.raises(UnsupportedImage, match=r"no linux/s390x image in the index \(it has: linux/arm/v6, "
                                                   r"linux/arm/v7, linux/amd64, linux/arm64/v8\)"):
            c.pick_platform(REF, index)
    bad = {"manifests": [{**_entry("amd64"), "digest": "sha256:../../etc/passwd"}]}
    async with RegistryClient() as c:
        with pytest.raises(UnsupportedImage, match="index entry 0 has an invalid digest"):
            c.pick_platform(REF, bad)
