"""Microsoft.ContainerRegistry: registries (with a real OCI data plane, kumo.registry), scope maps and tokens."""

from __future__ import annotations

from kumo.config import Settings
from kumo.providers.base import ResourceType
from kumo.providers.container_registry.registries import Registries
from kumo.providers.container_registry.tokens import ScopeMaps, Tokens
from kumo.registry.service import RegistryService


def handlers(service: RegistryService, settings: Settings) -> list[ResourceType]:
    return [Registries(service, settings), ScopeMaps(), Tokens()]
