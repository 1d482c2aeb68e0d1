"""`kumo`: start, stop and inspect a kumo cloud, and use it with the real az CLI."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from kumo import backends
from kumo.cli import azcli, daemon
from kumo.config import (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PUBLIC_IP_POOL, DEFAULT_REGISTRY_PORTS, Settings,
                         default_data_dir, parse_port_range)
from kumo.identity import directory
from kumo.identity.directory import DefaultIdentity
from kumo.store.store import describe as describe_store

T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), envvar="KUMO_DATA_DIR", default=None,
    help="Where kumo keeps its state (default /var/lib/kumo as root, else ~/.local/share/kumo; env KUMO_DATA_DIR).")


def _settings(data_dir: Path | None, host: str = DEFAULT_HOST, port: int | None = None, **kw: Any) -> Settings:
    root = (data_dir or default_data_dir()).absolute()
    if port is None:  # commands other than `up` talk to the running server, wherever it listens
        info = daemon.running(Settings(data_dir=root))
        port = int(info["port"]) if info else DEFAULT_PORT
        host = info["host"] if info else host
    return Settings(data_dir=root, host=host, port=port, **kw)


def _with_services(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run `fn(services)` against the data dir's store (works whether or not the server runs)."""

    async def go() -> T:
        from kumo.server import build_services

        services = await build_services(settings)
        try:
            return await fn(services)
        finally:
            await services.store.close()

    try:
        return asyncio.run(go())
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _require_running(settings: Settings) -> dict[str, Any]:
    info = daemon.running(settings)
    if info is None:
        raise click.ClickException(f"kumo is not running for data dir {settings.paths.root}: "
                                   "start it with `kumo up --detach` (or `make up`)")
    return info


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """kumo runs Azure's compute services for real on this machine, behind Azure Resource Manager's API."""


def _check_pool(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value)
    except ValueError as e:
        raise click.BadParameter(f"{value} is not an IPv4 prefix such as 127.77.0.0/16 ({e})") from None
    if net.num_addresses < 4:
        raise click.BadParameter("the pool needs at least 4 addresses (a /30)")
    return str(net)


def _check_ports(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    try:
        ports = parse_port_range(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return f"{ports.start}-{ports.stop - 1}"


@cli.command()
@data_dir_option
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="HTTPS port.")
@click.option("--detach", is_flag=True, help="Run in the background and return once kumo answers.")
@click.option("--strict-auth", is_flag=True, envvar="KUMO_STRICT_AUTH",
              help="Accept only registered principals with their secrets (default: any client id logs in as the "
                   "default principal).")
@click.option("--page-size", type=int, default=None, envvar="KUMO_PAGE_SIZE",
              help="Items per page of list responses (default 100).")
@click.option("--public-ip-pool", default=DEFAULT_PUBLIC_IP_POOL, envvar="KUMO_PUBLIC_IP_POOL", show_default=True,
              callback=_check_pool, help="IPv4 prefix public IP addresses come from (loopback by default: the host "
                                         "reaches each on any port and nothing leaves the machine).")
@click.option("--registry-ports", default=DEFAULT_REGISTRY_PORTS, envvar="KUMO_REGISTRY_PORTS", show_default=True,
              callback=_check_ports, help="Ports on localhost container registries listen on (one per registry; "
                                          "its loginServer is localhost:<port>).")
@click.option("--container-group-quota", type=click.IntRange(min=0), default=20, envvar="KUMO_CONTAINER_GROUP_QUOTA",
              show_default=True, help="Container groups a subscription may hold per region (Azure's quota).")
def up(data_dir: Path | None, host: str, port: int, detach: bool, strict_auth: bool, page_size: int | None,
       public_ip_pool: str, registry_ports: str, container_group_quota: int) -> None:
    """Start kumo (in the foreground unless --detach)."""
    settings = _settings(data_dir, host, port, strict_auth=strict_auth, page_size=page_size or 100,
                         public_ip_pool=public_ip_pool, registry_ports=registry_ports,
                         container_group_quota=container_group_quota)
    if (info := daemon.running(settings)) is not None:
        raise click.ClickException(f"kumo is already running for {settings.paths.root} "
                                   f"(pid {info['pid']}, {info['endpoint']})")
    if detach:
        extra = (["--strict-auth"] if strict_auth else []) + (["--page-size", str(page_size)] if page_size else []) \
            + ["--public-ip-pool", public_ip_pool, "--registry-ports", registry_ports,
               "--container-group-quota", str(container_group_quota)]
        click.echo(f"starting kumo in the background (log: {settings.paths.log_file}) …")
        try:
            info = daemon.start_detached(settings, extra)
        except RuntimeError as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"kumo is up at {info['endpoint']} (pid {info['pid']}). Try: kumo az group list")
        return
    from kumo.server import StartupError, run

    click.echo(f"starting kumo with data dir {settings.paths.root} …")
    try:
        run(settings)
    except StartupError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        pass


@cli.command()
@data_dir_option
def down(data_dir: Path | None) -> None:
    """Stop the kumo running for this data dir."""
    settings = _settings(data_dir)
    pid = daemon.stop(settings)
    click.echo(f"stopped kumo (pid {pid})" if pid else f"kumo is not running for {settings.paths.root}")


@cli.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(data_dir: Path | None, as_json: bool) -> None:
    """What runs, where, with which identity, and which host backends were found."""
    settings = _settings(data_dir)
    info = daemon.running(settings)
    paths = settings.paths
    ident = DefaultIdentity.load(paths.credentials) if paths.credentials.exists() else None
    found = backends.probe()
    report: dict[str, Any] = {
        "running": bool(info and daemon.healthy(info["endpoint"], paths.ca_cert)),
        "pid": info["pid"] if info else None,
        "endpoint": info["endpoint"] if info else settings.endpoint,
        "data_dir": str(paths.root),
        "store": describe_store(settings.database_url, paths.database),
        "ca_certificate": str(paths.ca_cert),
        "tenant_id": ident.tenant_id if ident else None,
        "subscription_id": ident.subscription_id if ident else None,
        "client_id": ident.client_id if ident else None,
        "backends": {b.name: b.found for b in found},
        "network": {"site": info.get("network_site"), "public_ip_pool": info.get("public_ip_pool"),
                    "unavailable": info.get("network_unavailable")} if info else None,
        "containers": {"unavailable": info.get("containers_unavailable"),
                       "catalog_dir": str(settings.catalog_dir)} if info else None,
        "vms": {"unavailable": info.get("vms_unavailable"), "accelerator": info.get("vm_accelerator"),
                "images_dir": str(settings.vm_images_dir)} if info else None,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    state = f"running (pid {report['pid']})" if report["running"] else "not running"
    click.echo(f"kumo {state}\n  endpoint      {report['endpoint']}\n  data dir      {report['data_dir']}\n"
               f"  store         {report['store']}\n  CA            {report['ca_certificate']}")
    if ident:
        click.echo(f"  tenant        {ident.tenant_id}\n  subscription  {ident.subscription_id}\n"
                   f"  principal     {ident.client_id} (Owner; secret in {paths.credentials})")
    if (net := report["network"]) is not None:
        click.echo("  network       " + (f"unavailable: {net['unavailable']}" if net["unavailable"] else
                                         f"site {net['site']}, public IPs from {net['public_ip_pool']}"))
    if (ctr := report["containers"]) is not None:
        click.echo("  containers    " + (f"unavailable: {ctr['unavailable']}" if ctr["unavailable"] else
                                         f"runc under conmon; image catalog {ctr['catalog_dir']}"))
    if (vms := report["vms"]) is not None:
        click.echo("  VMs           " + (f"unavailable: {vms['unavailable']}" if vms["unavailable"] else
                                         f"QEMU with {str(vms['accelerator']).upper()}; images in {vms['images_dir']}"))
    click.echo("backends:")
    for b in found:
        click.echo(f"  {b.name:<10} {b.found or 'missing: ' + b.install:<40} {b.purpose}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@data_dir_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def az(data_dir: Path | None, args: tuple[str, ...]) -> None:
    """Run the real az CLI against kumo (e.g. `kumo az group list`)."""
    settings = _settings(data_dir)
    info = _require_running(settings)
    exe = azcli.find_az()
    env = azcli.ensure_az_ready(settings, info["endpoint"], exe)
    os.execve(exe, [exe, *args], env)


@cli.command()
@data_dir_option
def env(data_dir: Path | None) -> None:
    """Print shell exports for plain az, the Azure SDKs and curl: eval "$(kumo env)"."""
    settings = _settings(data_dir)
    info = daemon.running(settings)
    endpoint = info["endpoint"] if info else settings.endpoint
    if not settings.paths.credentials.exists():
        raise click.ClickException("kumo has not been started with this data dir yet: run `kumo up` once")
    click.echo(f"# kumo at {endpoint}: eval \"$(kumo env)\"; for plain az run `kumo az account show` once "
               "(it registers the cloud and logs in inside AZURE_CONFIG_DIR)")
    click.echo(azcli.shell_exports(azcli.client_env(settings, endpoint)))


@cli.group()
def subscription() -> None:
    """Manage subscriptions."""


@subscription.command("create")
@data_dir_option
@click.option("--name", required=True, help="Display name.")
@click.option("--tenant", default=None, help="Tenant id (default: kumo's default tenant).")
def subscription_create(data_dir: Path | None, name: str, tenant: str | None) -> None:
    """Create a subscription; the default principal becomes its Owner."""
    async def create(services: Any) -> Any:
        ident = services.identity.default
        return await directory.create_subscription(services.store, name, tenant or ident.tenant_id, ident.object_id)

    sub = _with_services(_settings(data_dir), create)
    click.echo(json.dumps({"subscriptionId": sub.id, "tenantId": sub.tenant_id, "displayName": sub.display_name},
                          indent=2))


@cli.group()
def sp() -> None:
    """Manage service principals."""


@sp.command("create")
@data_dir_option
@click.option("--name", required=True, help="Display name.")
@click.option("--role", type=click.Choice(directory.ROLES), required=True)
@click.option("--subscription", "subscriptions", multiple=True, help="Subscription id (repeatable; default: the "
              "default subscription).")
def sp_create(data_dir: Path | None, name: str, role: str, subscriptions: tuple[str, ...]) -> None:
    """Create a service principal with a role on subscriptions; prints its secret once."""
    async def create(services: Any) -> Any:
        ident = services.identity.default
        subs = list(subscriptions) or [ident.subscription_id]
        async with services.store.read() as tx:
            first = await tx.get_subscription(subs[0])
        tenant = first.tenant_id if first else ident.tenant_id
        return await directory.create_service_principal(services.store, name, role, subs, tenant)

    principal, secret = _with_services(_settings(data_dir), create)
    click.echo(json.dumps({"appId": principal.app_id, "password": secret, "tenant": principal.tenant_id,
                           "displayName": principal.display_name, "objectId": principal.object_id}, indent=2))


@cli.group()
def tenant() -> None:
    """Manage tenants (directories)."""


@tenant.command("create")
@data_dir_option
@click.option("--name", required=True, help="Display name.")
def tenant_create(data_dir: Path | None, name: str) -> None:
    """Create a tenant. Subscriptions in it (kumo subscription create --tenant) get their own tokens."""
    t = _with_services(_settings(data_dir), lambda services: directory.create_tenant(services.store, name))
    click.echo(json.dumps({"tenantId": t.id, "displayName": t.display_name, "defaultDomain": t.default_domain},
                          indent=2))


@cli.group()
def catalog() -> None:
    """The offline image catalog (busybox, nginx, debian, python, Azure's aci-* samples) built from Debian packages."""


@catalog.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="OCI layout directory (default: $KUMO_CATALOG_DIR, /var/cache/kumo/catalog as root, "
                   "else ~/.cache/kumo/catalog).")
@click.option("--force", is_flag=True, help="Rebuild every layer, even when the recipe is unchanged.")
@click.option("--only", multiple=True, metavar="REPOSITORY", help="Build just this repository (repeatable), "
              "e.g. library/busybox.")
def catalog_build(out: Path | None, force: bool, only: tuple[str, ...]) -> None:
    """Build the catalog as an OCI image layout, or say it is up to date."""
    from kumo.images import catalog as image_catalog

    try:
        result = image_catalog.build(out, force=force, only=set(only) or None, say=click.echo)
    except image_catalog.BuildError as e:
        raise click.ClickException(str(e)) from e
    if result.failed:
        sys.exit(1)


@cli.group("vm-images")
def vm_images() -> None:
    """VM images for the marketplace (kumo tiny: the Debian cloud kernel and a busybox initramfs; Debian 12:
    a real Debian with cloud-init on a qcow2 disk)."""


@vm_images.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Images directory (default: $KUMO_VM_IMAGES_DIR, /var/cache/kumo/vm-images as root, "
                   "else ~/.cache/kumo/vm-images).")
@click.option("--force", is_flag=True, help="Rebuild even when the recipe is unchanged.")
@click.option("--only", multiple=True, type=click.Choice(["tiny", "debian"]),
              help="Build just this image (repeatable); default: tiny, then debian (which needs root, "
                   "a reachable Debian mirror and about a minute).")
def vm_images_build(out: Path | None, force: bool, only: tuple[str, ...]) -> None:
    """Build the VM images into the marketplace directory, or say they are up to date."""
    from kumo.images import vm

    try:
        vm.build_all(out, force=force, only=only, say=click.echo)
    except vm.BuildError as e:
        raise click.ClickException(str(e)) from e


@vm_images.command("import")
@click.argument("disk")
@click.option("--urn", required=True, help="publisher:offer:sku:version it is listed under, e.g. "
              "Canonical:ubuntu-24_04-lts:server:1.0.0")
@click.option("--kernel", required=True, help="Its kernel (a path or URL): kumo boots images directly.")
@click.option("--initrd", required=True, help="Its initrd (a path or URL).")
@click.option("--append", default=None, help="Kernel command line (default: root=/dev/vda1 rw console=ttyS0 "
              "net.ifnames=0, right for a partitioned cloud image).")
@click.option("--alias", default=None, help="A name for `az vm create --image`, e.g. Ubuntu2404.")
@click.option("--min-memory", type=int, default=512, show_default=True, help="Smallest VM memory in MiB.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Images directory (as for build).")
def vm_images_import(disk: str, urn: str, kernel: str, initrd: str, append: str | None, alias: str | None,
                     min_memory: int, out: Path | None) -> None:
    """Import DISK (a qcow2 or raw file or URL) as a marketplace image. The guest must run cloud-init
    (NoCloud) and the QEMU guest agent."""
    from kumo.images import vm
    from kumo.images.vm.importer import DEFAULT_APPEND, ImportSpec, import_image

    try:
        import_image(ImportSpec(urn=urn, disk=disk, kernel=kernel, initrd=initrd, append=append or DEFAULT_APPEND,
                                alias=alias, min_memory_mib=min_memory), out or vm.default_dir(), say=click.echo)
    except vm.BuildError as e:
        raise click.ClickException(str(e)) from e


@cli.group()
def images() -> None:
    """Container images in kumo's image store (what container groups start from)."""


@images.command("pull")
@data_dir_option
@click.argument("reference")
@click.option("--username", default=None, help="Registry user (with --password), e.g. an ACR admin user.")
@click.option("--password", default=None, envvar="KUMO_REGISTRY_PASSWORD", help="Registry password.")
def images_pull(data_dir: Path | None, reference: str, username: str | None, password: str | None) -> None:
    """Pull REFERENCE into the image store, with progress, so a group starting from it needs no download.
    `nginx` and `mcr.microsoft.com/...` come from kumo's offline catalog (kumo must be running)."""
    import asyncio
    import time

    from kumo.images.reference import InvalidReference, parse_reference
    from kumo.images.registry_client import Credentials, PullError, RegistryClient, RegistryUnreachable
    from kumo.images.store import ImageStore

    settings = _settings(data_dir)
    try:
        ref = parse_reference(reference)
    except InvalidReference as e:
        raise click.BadParameter(str(e)) from None
    done: dict[str, tuple[int, int]] = {}
    shown = [0.0]

    def progress(digest: str, got: int, total: int) -> None:
        done[digest] = (got, total)
        now = time.monotonic()
        if now - shown[0] > 0.2 or got == total:
            shown[0] = now
            have, want = sum(g for g, _ in done.values()), sum(t for _, t in done.values())
            click.echo(f"\r  {len(done)} blob(s): {have / 1e6:.1f} / {want / 1e6:.1f} MB", nl=False)

    async def pull() -> None:
        creds = {ref.registry: Credentials(username, password or "")} if username else {}
        client = RegistryClient(credentials=creds, mirrors=settings.image_mirrors, ca_bundle=settings.paths.ca_bundle)
        try:
            started = time.monotonic()
            image = await ImageStore(settings.paths.root / "images", client).pull(ref, progress)
        finally:
            await client.aclose()
        click.echo(f"\npulled {ref} ({image.manifest_digest}, {len(image.layers)} layer(s), "
                   f"{image.size / 1e6:.1f} MB) in {time.monotonic() - started:.1f} s")

    click.echo(f"pulling {ref} …")
    try:
        asyncio.run(pull())
    except RegistryUnreachable as e:
        raise click.ClickException(f"{e} (is kumo running? it serves the image catalog)") from None
    except PullError as e:
        raise click.ClickException(str(e)) from None


def main() -> None:
    try:
        cli(prog_name="kumo")
    except KeyboardInterrupt:
        sys.exit(130)
