"""The image marketplace, `…/providers/Microsoft.Compute/locations/{loc}/publishers/{p}/artifacttypes/
vmimage/offers/{o}/skus/{s}/versions[/{v}]` (`az vm image list-publishers|list-offers|list-skus|list|
show`, and what `az vm create --image` resolves), and the alias document `az vm create --image
<alias>` reads, all listing what `ImageCatalog` really has. Every list is a bare JSON array, as in
Azure. An image kumo lacks is a 404 naming the ones it has, never a substitute."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kumo.arm.context import RequestContext
from kumo.arm.errors import ArmError, bad_request
from kumo.compute.marketplace import ImageCatalog, MarketplaceImage, version_key
from kumo.providers.base import ProviderRead, ProviderReads, TypeInfo, match_path
from kumo.providers.compute import API_VERSIONS, NAMESPACE
from kumo.providers.resources.locations import normalise_location

if TYPE_CHECKING:
    from kumo.arm.context import Services

ALIAS_DOC_PATH = "/kumo/vmImageAliasDoc.json"
IMAGES = ("locations", "*", "publishers", "*", "artifacttypes", "vmimage", "offers")
READ = f"{NAMESPACE}/locations/publishers/artifacttypes/offers/skus/versions/read"


class Marketplace(ProviderReads):
    namespace = NAMESPACE
    types = (TypeInfo("locations/publishers", API_VERSIONS), TypeInfo("locations/artifacttypes", API_VERSIONS))

    def __init__(self, catalog: ImageCatalog) -> None:
        self.catalog = catalog

    @staticmethod
    def of(services: "Services") -> "Marketplace | None":
        ns = services.providers.namespace(NAMESPACE)
        return next((r for r in ns.reads if isinstance(r, Marketplace)), None) if ns else None

    def match(self, rest: tuple[str, ...]) -> tuple[str, ProviderRead] | None:
        routes = ((("locations", "*", "publishers"), self.publishers), (IMAGES, self.offers),
                  ((*IMAGES, "*", "skus"), self.skus), ((*IMAGES, "*", "skus", "*", "versions"), self.versions),
                  ((*IMAGES, "*", "skus", "*", "versions", "*"), self.version))
        for pattern, handler in routes:
            if (m := match_path(rest, pattern)) is not None:
                return READ, functools.partial(handler, names=m)
        return None

    # -- the levels of the marketplace ------------------------------------------------------------
    async def publishers(self, ctx: RequestContext, sub: str, *, names: tuple[str, ...]) -> Response:
        loc = _location(names[0])
        return JSONResponse([_item(sub, loc, p) for p in self.catalog.publishers()])

    async def offers(self, ctx: RequestContext, sub: str, *, names: tuple[str, ...]) -> Response:
        loc, publisher = _location(names[0]), names[1]
        offers = self.catalog.offers(publisher)
        if not offers:
            raise self._not_found(f"Publisher: {publisher} was not found.")
        return JSONResponse([_item(sub, loc, publisher, o) for o in offers])

    async def skus(self, ctx: RequestContext, sub: str, *, names: tuple[str, ...]) -> Response:
        loc, publisher, offer = _location(names[0]), names[1], names[2]
        skus = self.catalog.skus(publisher, offer)
        if not skus:
            raise self._not_found(f"Offer: {offer} was not found.")
        return JSONResponse([{**_item(sub, loc, publisher, offer, s),
                              "properties": {"automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False}}}
                             for s in skus])

    async def versions(self, ctx: RequestContext, sub: str, *, names: tuple[str, ...]) -> Response:
        loc = _location(names[0])
        images = self.catalog.versions(*names[1:4])
        if not images:
            raise self._not_found("Artifact: VMImage was not found.")
        images = sorted(images, key=lambda i: version_key(i.version), reverse=_descending(ctx))
        if (top := ctx.query("$top")) is not None:
            images = images[:_top(top)]
        expand = "properties" in (ctx.query("$expand") or "").lower()
        return JSONResponse([image_body(sub, loc, i, properties=expand) for i in images])

    async def version(self, ctx: RequestContext, sub: str, *, names: tuple[str, ...]) -> Response:
        loc = _location(names[0])
        image = self.catalog.find(*names[1:5])
        if image is None:
            raise self._not_found("Artifact: VMImage was not found.")
        return JSONResponse(image_body(sub, loc, image, properties=True))

    def _not_found(self, azure_message: str) -> ArmError:
        return ArmError(404, "NotFound", f"{azure_message} {self.catalog.describe()}")

    # -- the alias document ---------------------------------------------------------------------
    def alias_doc(self) -> dict[str, Any]:
        """The document behind the cloud's `vmImageAliasDoc` endpoint, in the shape of Azure's own
        (an ARM template whose `aliases` output maps OS type -> alias -> image)."""
        by_os: dict[str, dict[str, Any]] = {"Linux": {}, "Windows": {}}
        for alias, image in sorted(self.catalog.aliases().items()):
            by_os.setdefault(image.os, {})[alias] = {
                "publisher": image.publisher, "offer": image.offer, "sku": image.sku, "version": "latest",
                "architecture": image.architecture}
        return {"$schema": "https://schema.management.azure.com/schemas/2015-01-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0", "parameters": {}, "variables": {}, "resources": [],
                "outputs": {"aliases": {"type": "object", "value": by_os}}}

    async def serve_alias_doc(self, request: Request) -> Response:
        return JSONResponse(self.alias_doc())


def image_body(sub: str, location: str, image: MarketplaceImage, *, properties: bool) -> dict[str, Any]:
    body: dict[str, Any] = {**_item(sub, location, image.publisher, image.offer, image.sku, image.version)}
    if properties:
        features = [{"name": "IsAcceleratedNetworkSupported", "value": "False"},
                    {"name": "DiskControllerTypes", "value": "SCSI"}]
        if image.security_type:
            features.insert(0, {"name": "SecurityType", "value": image.security_type})
        body["properties"] = {
            "hyperVGeneration": image.hyperv_generation, "architecture": image.architecture,
            "osDiskImage": {"operatingSystem": image.os, "sizeInBytes": image.size_in_bytes,
                            "sizeInGb": math.ceil(image.size_in_bytes / 2**30)},
            "dataDiskImages": [], "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False},
            "disallowed": {"vmDiskType": "Unmanaged"}, "features": features,
            "imageDeprecationStatus": {"imageState": "Active"}}
    return body


def _item(sub: str, location: str, publisher: str, offer: str | None = None, sku: str | None = None,
          version: str | None = None) -> dict[str, Any]:
    """`{name, location, id}` of one level, with Azure's capitalised id segments."""
    path = f"/Subscriptions/{sub}/Providers/{NAMESPACE}/Locations/{location}/Publishers/{publisher}"
    name = publisher
    for segment, value in (("ArtifactTypes/VMImage/Offers", offer), ("Skus", sku), ("Versions", version)):
        if value is not None:
            path, name = f"{path}/{segment}/{value}", value
    return {"name": name, "location": location, "id": path}


def _location(value: str) -> str:
    return normalise_location(value, f"{NAMESPACE}/locations/publishers")


def _descending(ctx: RequestContext) -> bool:
    order = " ".join((ctx.query("$orderby") or "name asc").lower().split())
    if order not in ("name", "name asc", "name desc"):
        raise bad_request("InvalidParameter", f"The $orderby '{order[:100]}' is not supported: use 'name asc' or "
                          "'name desc'.", "$orderby")
    return order == "name desc"


def _top(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise bad_request("InvalidParameter", f"The value '{value[:32]}' of $top must be a positive integer.", "$top")
    return n
