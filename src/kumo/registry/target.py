"""A registry as its data plane sees it: storage name, login server, and where its ARM resource is."""

from __future__ import annotations

from dataclasses import dataclass

SECRETS = "_secrets"  # key of the stored ARM body holding credentials; never in a GET, list or event
REGISTRY_TYPE = "microsoft.containerregistry/registries"
CATALOG = "catalog"  # the built-in public registry (anonymous pull, no push)


@dataclass(frozen=True)
class Target:
    name: str                # storage name: the registry's name in lower case
    login_server: str        # host:port clients use
    key: str | None = None   # the ARM resource's key; None for the built-in catalog
    anonymous_pull: bool = False
    read_only: bool = False
