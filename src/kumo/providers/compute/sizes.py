"""`…/providers/Microsoft.Compute/locations/{loc}/vmSizes` (`az vm list-sizes`) and
`…/providers/Microsoft.Compute/skus` (`az vm list-skus`): kumo's catalogue of Azure VM sizes, offered
in kumo's location (and, since Azure's region names are aliases of it, in any of them on request)."""

from __future__ import annotations

import functools
import re
from typing import Any

from starlette.responses import JSONResponse, Response

from kumo.arm.context import RequestContext
from kumo.arm.errors import bad_request
from kumo.compute import sizes
from kumo.providers.base import ProviderRead, ProviderReads, TypeInfo, match_path
from kumo.providers.compute import API_VERSIONS, NAMESPACE, SKU_API_VERSIONS
from kumo.providers.resources.locations import home_location, normalise_location

LOCATION_FILTER = re.compile(r"^\s*location\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)


def sku_body(size: sizes.VmSize, location: str) -> dict[str, Any]:
    return {"resourceType": "virtualMachines", "name": size.name, "tier": "Standard", "size": size.size,
            "family": size.family, "locations": [location],
            "locationInfo": [{"location": location, "zones": [], "zoneDetails": []}],
            "capabilities": size.capabilities(), "restrictions": []}


class ComputeSizes(ProviderReads):
    namespace = NAMESPACE
    types = (TypeInfo("locations", API_VERSIONS), TypeInfo("locations/vmSizes", API_VERSIONS),
             TypeInfo("skus", SKU_API_VERSIONS))

    def match(self, rest: tuple[str, ...]) -> tuple[str, ProviderRead] | None:
        if (m := match_path(rest, ("locations", "*", "vmsizes"))) is not None:
            return f"{NAMESPACE}/locations/vmSizes/read", functools.partial(self.vm_sizes, location=m[0])
        if match_path(rest, ("skus",)) is not None:
            return f"{NAMESPACE}/skus/read", self.skus
        return None

    async def vm_sizes(self, ctx: RequestContext, sub: str, *, location: str) -> Response:
        normalise_location(location, f"{NAMESPACE}/locations/vmSizes")
        return JSONResponse({"value": [s.vm_size_body() for s in sizes.SIZES]})

    async def skus(self, ctx: RequestContext, sub: str) -> Response:
        location = home_location()
        if (flt := ctx.query("$filter")) is not None:
            m = LOCATION_FILTER.match(flt)
            if m is None:
                raise bad_request("InvalidParameter", f"The $filter '{flt[:100]}' is not supported: only "
                                  "\"location eq '<location>'\" is.", "$filter")
            location = normalise_location(m.group(1), f"{NAMESPACE}/skus")
        return JSONResponse({"value": [sku_body(s, location) for s in sizes.SIZES]})
