"""The kumo server process: opens the store, makes keys and certificates on first start, resumes
unfinished operations, and serves HTTPS with uvicorn in one asyncio loop."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from kumo.arm.app import build_app
from kumo.arm.auth import Authenticator
from kumo.arm.context import Services
from kumo.arm.lro import Operations
from kumo.config import Settings
from kumo.controllers.autoscale.evaluator import Autoscaler
from kumo.controllers.container_groups.controller import ContainerController
from kumo.controllers.disks import DiskController, catalog_resolver
from kumo.controllers.metrics.service import MetricsService
from kumo.controllers.network import NetworkController
from kumo.controllers.scale_sets import ScaleSetController
from kumo.controllers.virtual_machines.controller import VmController
from kumo.identity import directory
from kumo.identity.endpoints import IdentityService
from kumo.identity.tls import _write_private, ensure_certificates
from kumo.identity.tokens import TokenSigner
from kumo.providers import lifecycle
from kumo.providers.base import ProviderRegistry, TypeInfo
from kumo.compute.marketplace import ImageCatalog
from kumo.providers.compute import disks, images, marketplace, scale_sets, sizes, snapshots, virtual_machines
from kumo.providers.container_instance import container_groups
from kumo.providers.insights import activity_log, autoscale
from kumo.providers.insights import metrics as insights_metrics
from kumo.providers.network import (load_balancers, network_interfaces, public_ips, security_groups,
                                    virtual_networks)
from kumo.providers.resources import deployments, resource_groups, template_specs
from kumo.providers import container_registry
from kumo.registry.service import RegistryService
from kumo.store import Store

log = logging.getLogger("kumo")

Say = Callable[[str], None]


class StartupError(Exception):
    """Something the user must fix before kumo can start; the message says how."""


class _Uvicorn(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM once it has shut down, which would cancel kumo's own cleanup
    (operations, store, run file); kumo stops on the signal and then exits normally instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def build_registry(settings: Settings) -> ProviderRegistry:
    registry = ProviderRegistry()
    registry.add_namespace(
        "Microsoft.Resources",
        TypeInfo("resourceGroups", resource_groups.API_VERSIONS),
        TypeInfo("subscriptions", resource_groups.API_VERSIONS),
        TypeInfo("locations", resource_groups.API_VERSIONS),
        TypeInfo("operations", resource_groups.API_VERSIONS),
        TypeInfo("providers", resource_groups.API_VERSIONS),
        TypeInfo("resources", resource_groups.API_VERSIONS),
    )
    registry.add(template_specs.TemplateSpecs())
    registry.add(template_specs.TemplateSpecVersions())
    registry.add(deployments.Deployments())
    registry.add(deployments.DeploymentOperations())
    pool = settings.public_network
    for handler in (virtual_networks.VirtualNetworks(), virtual_networks.Subnets(),
                    network_interfaces.NetworkInterfaces(pool), public_ips.PublicIPAddresses(pool),
                    security_groups.NetworkSecurityGroups(), security_groups.SecurityRules(),
                    security_groups.DefaultSecurityRules(),
                    load_balancers.LoadBalancers(pool), load_balancers.InboundNatRules(),
                    *(part() for part in load_balancers.LOAD_BALANCER_PARTS)):
        registry.add(handler)
    registry.add(container_groups.ContainerGroups(pool, settings.container_group_quota))
    registry.add_reads(sizes.ComputeSizes())
    catalog = ImageCatalog(settings.vm_images_dir)
    registry.add_reads(marketplace.Marketplace(catalog))
    registry.add(virtual_machines.VirtualMachines(catalog))
    for handler in scale_sets.handlers(catalog):
        registry.add(handler)
    resolver = catalog_resolver(catalog)
    registry.add(disks.Disks(resolver))
    registry.add(snapshots.Snapshots(resolver))
    registry.add(images.Images())
    registry.add(autoscale.AutoscaleSettings())
    registry.add_reads(activity_log.ActivityLog())
    return registry


def _msi_secret(path: Path) -> str:
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(24).encode())
    return path.read_text().strip()


async def build_services(settings: Settings, say: Say = lambda _m: None) -> Services:
    paths = settings.paths
    paths.root.mkdir(parents=True, exist_ok=True)
    if ensure_certificates(paths, settings.tls_names()):
        say(f"made a local CA and HTTPS certificate in {paths.tls}")
    signer = TokenSigner(paths.signing_key)
    store = await Store.open(settings.database_url, paths.database)
    default = await directory.bootstrap(store, paths.credentials)
    identity = IdentityService(settings, store, signer, default, _msi_secret(paths.msi_secret))
    operations = Operations()
    network = NetworkController(store, paths.root, settings.public_network)
    services = Services(settings=settings, store=store, operations=operations, providers=build_registry(settings),
                        auth=Authenticator(signer, store, identity.arm_audiences), identity=identity,
                        network=network, containers=ContainerController(
                            store, paths.root, network, paths.ca_bundle, settings.image_mirrors),
                        vms=VmController(store, paths.root, network, ImageCatalog(settings.vm_images_dir)),
                        disks=DiskController(store, paths.root,
                                             catalog_resolver(ImageCatalog(settings.vm_images_dir))))
    operations.services = services
    services.vms.services = services
    for handler in container_registry.handlers(RegistryService(settings, store, signer), settings):
        services.providers.add(handler)  # container registries: ARM types with their own data plane
    lifecycle.register_operations(services)
    operations.register("vm.power", services.vms.power_operation)
    operations.register("vm.runCommand", services.vms.run_command_operation)
    operations.register("vm.reimage", services.vms.reimage_operation)
    resource_groups.register_operations(services)
    services.metrics = MetricsService.of(services)
    services.extensions[insights_metrics.NAMESPACE] = insights_metrics.serve
    services.scale_sets = ScaleSetController(services)
    scale_sets.register_operations(services)
    return services


def _lock(settings: Settings) -> int:
    """One server per data dir: a held lock means another kumo runs on it."""
    settings.paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"another kumo is already running with data dir {settings.paths.root}; "
                           "stop it with `kumo down` or pass a different --data-dir") from None
    return fd


def _bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {settings.host}:{settings.port} ({e.strerror}); "
                           "pass another --port") from None
    sock.listen(1024)
    # never inheritable: uvloop spawns children without closing fds, and a container's conmon that kept
    # kumo's listening socket would hold the port after kumo died
    sock.set_inheritable(False)
    return sock


async def serve(settings: Settings, say: Say = print) -> None:
    lock_fd = _lock(settings)
    sock = _bind(settings)
    services = await build_services(settings, say)
    paths = settings.paths
    await services.network.start()
    if services.network.unavailable:
        say(f"virtual networks are unavailable: {services.network.unavailable}")
    await services.containers.start()
    if services.containers.unavailable:
        say(f"container groups are unavailable: {services.containers.unavailable}")
    await services.disks.start()
    if services.disks.unavailable:
        say(f"disks are unavailable: {services.disks.unavailable}")
    await services.vms.start()
    await services.scale_sets.start()
    if services.vms.unavailable:
        say(f"virtual machines are unavailable: {services.vms.unavailable}")
    assert services.metrics is not None
    await services.metrics.start()
    registries = RegistryService.of(services)
    assert registries is not None
    await registries.start()
    resumed = await services.operations.resume()
    if resumed:
        say(f"resumed {resumed} unfinished operation(s)")
    autoscaler = Autoscaler(services, settings.autoscale_seconds)
    autoscaler.start()
    config = uvicorn.Config(build_app(services), ssl_certfile=str(paths.server_cert),
                            ssl_keyfile=str(paths.server_key), log_level="warning", access_log=False,
                            lifespan="off", timeout_keep_alive=120, loop="none",
                            # idle TLS clients never answer close_notify: do not wait on them to stop
                            timeout_graceful_shutdown=2)
    server = _Uvicorn(config)
    network = services.network
    paths.run_file.write_text(json.dumps({"pid": os.getpid(), "host": settings.host, "port": settings.port,
                                          "endpoint": settings.endpoint, "public_ip_pool": settings.public_ip_pool,
                                          "network_site": network.site, "network_unavailable": network.unavailable,
                                          "containers_unavailable": services.containers.unavailable,
                                          "vms_unavailable": services.vms.unavailable,
                                          "vm_accelerator": services.vms.accelerator}))
    say(f"kumo is serving Azure Resource Manager at {settings.endpoint} (data in {paths.root})")
    try:
        await server.serve(sockets=[sock])
    finally:
        await autoscaler.close()
        await services.operations.drain()
        await services.metrics.close()
        await registries.close()
        await services.containers.close()
        await services.scale_sets.close()
        await services.vms.close()
        await services.network.close()
        await services.store.close()
        paths.run_file.unlink(missing_ok=True)
        os.close(lock_fd)
        say("kumo stopped")


def run(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))
