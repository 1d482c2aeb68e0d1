"""Locations. kumo runs everything on this machine, in one location named `local` by default
(`KUMO_LOCATION`). Azure's public region names are accepted as aliases so that infrastructure code
written for Azure runs unchanged; a resource keeps the name it was given (normalised as Azure does:
"West Europe" -> "westeurope"). Anything else is refused with Azure's error."""

from __future__ import annotations

import os

from kumo.arm.errors import ArmError

# Azure public cloud regions: name -> display name.
AZURE_REGIONS: dict[str, str] = {
    "eastus": "East US", "eastus2": "East US 2", "southcentralus": "South Central US", "westus2": "West US 2",
    "westus3": "West US 3", "australiaeast": "Australia East", "southeastasia": "Southeast Asia",
    "northeurope": "North Europe", "swedencentral": "Sweden Central", "uksouth": "UK South",
    "westeurope": "West Europe", "centralus": "Central US", "southafricanorth": "South Africa North",
    "centralindia": "Central India", "eastasia": "East Asia", "japaneast": "Japan East",
    "koreacentral": "Korea Central", "canadacentral": "Canada Central", "francecentral": "France Central",
    "germanywestcentral": "Germany West Central", "italynorth": "Italy North", "norwayeast": "Norway East",
    "polandcentral": "Poland Central", "spaincentral": "Spain Central", "switzerlandnorth": "Switzerland North",
    "mexicocentral": "Mexico Central", "uaenorth": "UAE North", "brazilsouth": "Brazil South",
    "israelcentral": "Israel Central", "qatarcentral": "Qatar Central", "northcentralus": "North Central US",
    "westus": "West US", "westcentralus": "West Central US", "japanwest": "Japan West",
    "australiasoutheast": "Australia Southeast", "australiacentral": "Australia Central",
    "canadaeast": "Canada East", "ukwest": "UK West", "koreasouth": "Korea South", "southindia": "South India",
    "westindia": "West India", "francesouth": "France South", "germanynorth": "Germany North",
    "norwaywest": "Norway West", "switzerlandwest": "Switzerland West", "swedensouth": "Sweden South",
    "uaecentral": "UAE Central", "brazilsoutheast": "Brazil Southeast", "southafricawest": "South Africa West",
    "newzealandnorth": "New Zealand North", "indonesiacentral": "Indonesia Central",
    "malaysiawest": "Malaysia West", "chilecentral": "Chile Central",
}


def home_location() -> str:
    return os.environ.get("KUMO_LOCATION", "local").lower()


def known_locations() -> dict[str, str]:
    home = home_location()
    return {home: f"{home.capitalize()} (kumo, this machine)", **AZURE_REGIONS}


def normalise_location(value: str, resource_type: str) -> str:
    name = "".join(value.split()).lower()
    if name in known_locations():
        return name
    raise ArmError(400, "LocationNotAvailableForResourceType",
                   f"The provided location '{value}' is not available for resource type '{resource_type}'. "
                   f"kumo serves '{home_location()}' and accepts Azure's region names (e.g. 'westeurope').")


def location_body(subscription_id: str, name: str, display: str) -> dict[str, object]:
    return {"id": f"/subscriptions/{subscription_id}/locations/{name}", "name": name, "type": "Region",
            "displayName": display, "regionalDisplayName": display,
            "metadata": {"regionType": "Physical", "regionCategory": "Recommended",
                         "physicalLocation": "this machine", "geographyGroup": "kumo"}}
