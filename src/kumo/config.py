"""Settings shared by the server and the CLI: where the data lives and how to reach kumo."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 8443
DEFAULT_HOST = "127.0.0.1"
# Public IPs live on loopback by default: the host reaches each on any port and nothing leaves it.
DEFAULT_PUBLIC_IP_POOL = "127.77.0.0/16"
# Each container registry gets its own HTTPS port on localhost (its loginServer is localhost:<port>).
DEFAULT_REGISTRY_PORTS = "5100-5199"


def default_data_dir() -> Path:
    """`/var/lib/kumo` as root, else `~/.local/share/kumo`; `KUMO_DATA_DIR` overrides both."""
    if env := os.environ.get("KUMO_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/kumo")
    return Path.home() / ".local/share/kumo"


def default_catalog_dir() -> Path:
    """Where kumo's offline image catalog (an OCI layout) is found: `KUMO_CATALOG_DIR`, else
    `/var/cache/kumo/catalog` as root, else `~/.cache/kumo/catalog`."""
    if env := os.environ.get("KUMO_CATALOG_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/kumo/catalog")
    return Path.home() / ".cache/kumo/catalog"


def default_vm_images_dir() -> Path:
    """Where the VM image builder leaves disk images, one subdirectory with an `image.json` manifest
    each: `KUMO_VM_IMAGES_DIR`, else `/var/cache/kumo/vm-images` as root, else `~/.cache/kumo/vm-images`."""
    if env := os.environ.get("KUMO_VM_IMAGES_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/kumo/vm-images")
    return Path.home() / ".cache/kumo/vm-images"


def parse_port_range(text: str) -> range:
    """`5100-5199` (or one port) as a range; ValueError with a readable message otherwise."""
    first, _, last = text.strip().partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"{text!r} is not a port range such as 5100-5199") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"{text!r} is not a port range such as 5100-5199 (1-65535, low-high)")
    return range(lo, hi + 1)


@dataclass(frozen=True)
class Paths:
    """Every file kumo keeps in its data dir, named in one place."""

    root: Path

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.tls / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls / "server-key.pem"

    @property
    def ca_bundle(self) -> Path:
        """certifi's bundle plus kumo's CA: what REQUESTS_CA_BUNDLE should point at."""
        return self.tls / "bundle.pem"

    @property
    def signing_key(self) -> Path:
        return self.root / "identity" / "signing-key.pem"

    @property
    def msi_secret(self) -> Path:
        return self.root / "identity" / "msi-header"

    @property
    def credentials(self) -> Path:
        """The default tenant, subscription and service principal (with its secret), mode 0600."""
        return self.root / "identity" / "default.json"

    @property
    def database(self) -> Path:
        return self.root / "kumo.db"

    @property
    def run_file(self) -> Path:
        """Written by a running server: pid, host, port."""
        return self.root / "run.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "kumo.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "kumo.log"

    @property
    def az_config_dir(self) -> Path:
        return self.root / "az"

    @property
    def registries(self) -> Path:
        """Container registry content: shared blobs, per-registry repositories, upload sessions."""
        return self.root / "registries"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database_url: str | None = field(default_factory=lambda: os.environ.get("KUMO_DATABASE_URL") or None)
    strict_auth: bool = field(default_factory=lambda: os.environ.get("KUMO_STRICT_AUTH", "") in ("1", "true", "yes"))
    page_size: int = field(default_factory=lambda: int(os.environ.get("KUMO_PAGE_SIZE", "100")))
    public_ip_pool: str = field(default_factory=lambda: os.environ.get("KUMO_PUBLIC_IP_POOL", DEFAULT_PUBLIC_IP_POOL))
    registry_ports: str = field(default_factory=lambda: os.environ.get("KUMO_REGISTRY_PORTS", DEFAULT_REGISTRY_PORTS))
    catalog_dir: Path = field(default_factory=default_catalog_dir)
    vm_images_dir: Path = field(default_factory=default_vm_images_dir)
    # Azure's default quota of container groups per subscription and region, as the issue states it.
    container_group_quota: int = field(default_factory=lambda: int(os.environ.get("KUMO_CONTAINER_GROUP_QUOTA",
                                                                                  "20")))
    # How often the metrics sampler measures VMs and container groups (Microsoft.Insights metrics).
    metrics_sample_seconds: float = field(default_factory=lambda: float(os.environ.get("KUMO_METRICS_SAMPLE_SECONDS",
                                                                                       "5")))
    # How often the autoscale evaluator runs every autoscale setting (Azure's runs every 30-60 s).
    autoscale_seconds: float = field(default_factory=lambda: float(os.environ.get("KUMO_AUTOSCALE_SECONDS", "5")))

    @property
    def public_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.public_ip_pool)

    @property
    def image_mirrors(self) -> dict[str, str]:
        """Image names under mcr.microsoft.com and Docker Hub resolve to kumo's offline catalog, served by
        kumo itself at /v2/ (KUMO_IMAGE_MIRRORS="registry=endpoint,…" adds or replaces mirrors)."""
        catalog = f"https://localhost:{self.port}"
        mirrors = {"mcr.microsoft.com": catalog, "docker.io": catalog}
        for item in filter(None, os.environ.get("KUMO_IMAGE_MIRRORS", "").split(",")):
            name, _, endpoint = item.partition("=")
            mirrors[name.strip()] = endpoint.strip()
        return mirrors

    @property
    def registry_port_range(self) -> range:
        return parse_port_range(self.registry_ports)

    @property
    def paths(self) -> Paths:
        return Paths(self.data_dir)

    @property
    def public_host(self) -> str:
        """The name clients use in URLs: localhost unless kumo listens on a specific other address."""
        if self.host in ("127.0.0.1", "0.0.0.0", "::", "localhost"):
            return "localhost"
        return self.host

    @property
    def endpoint(self) -> str:
        return f"https://{self.public_host}:{self.port}/"

    def tls_names(self) -> list[str]:
        names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
        if self.host not in names and self.host not in ("0.0.0.0", "::"):
            names.append(self.host)
        return names
