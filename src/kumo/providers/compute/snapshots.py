"""Microsoft.Compute/snapshots: a point-in-time copy of a disk (or of another snapshot), taken as a
standalone qcow2 of kumo's disk store, so the source may change or go away afterwards. `incremental`
is accepted and shown; kumo's snapshots are always full copies (sparse, so only written blocks take
room). Everything else is shared with disks (providers/compute/disks.py)."""

from __future__ import annotations

from typing import Any

from kumo.providers.compute.disks import DiskLike

SNAPSHOT_SKUS = {"Standard_LRS": "Standard", "Premium_LRS": "Premium", "Standard_ZRS": "Standard"}


class Snapshots(DiskLike):
    # 1. the ARM type
    type_path = ("snapshots",)
    skus = SNAPSHOT_SKUS
    default_sku = "Standard_LRS"
    options = ("Empty", "Copy")
    noun = "snapshot"

    # 2. normalise: what snapshots add to the shared properties
    def normalise_more(self, props: dict[str, Any], sku: str) -> dict[str, Any]:
        incremental = props.get("incremental")
        if isinstance(incremental, str):
            incremental = incremental.lower() == "true"
        return {"incremental": bool(incremental)}
