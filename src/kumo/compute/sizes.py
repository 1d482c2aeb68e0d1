"""Azure's VM sizes as data: what `hardwareProfile.vmSize` may name, with the numbers Azure documents
(vCPUs, memory, temp disk, data disks, NICs) and the capabilities `az vm list-skus` shows.

A size is a promise about the guest (vCPUs and memory it sees), not about the host: kumo gives a VM
exactly this many vCPUs and this much memory."""

from __future__ import annotations

from dataclasses import dataclass

# Azure's limit for an OS disk of any size (1023 GiB), as `az vm list-sizes` reports it.
OS_DISK_SIZE_MB = 1047552


@dataclass(frozen=True)
class VmSize:
    name: str  # Standard_B1s
    family: str  # standardBSFamily: what quotas and `list-skus` group by
    vcpus: int
    memory_mb: int
    resource_disk_mb: int  # the temporary disk (0: the size has none, e.g. Dsv5)
    max_data_disks: int
    max_nics: int
    premium_io: bool  # Premium SSD data disks ('s' in the name)
    accelerated_networking: bool
    vcpus_per_core: int  # 2 on hyper-threaded series
    hyperv_generations: str = "V1,V2"
    low_priority: bool = True  # Spot capable (B-series is not)
    os_disk_mb: int = OS_DISK_SIZE_MB

    @property
    def size(self) -> str:
        """The name without its tier: `B1s`."""
        return self.name.split("_", 1)[1]

    @property
    def memory_gb(self) -> str:
        return f"{self.memory_mb / 1024:g}"

    def vm_size_body(self) -> dict[str, object]:
        """As `…/vmSizes` and `…/virtualMachines/{vm}/vmSizes` list it."""
        return {"name": self.name, "numberOfCores": self.vcpus, "osDiskSizeInMB": self.os_disk_mb,
                "resourceDiskSizeInMB": self.resource_disk_mb, "memoryInMB": self.memory_mb,
                "maxDataDiskCount": self.max_data_disks}

    def capabilities(self) -> list[dict[str, str]]:
        """As `…/providers/Microsoft.Compute/skus` lists them (every value a string, as in Azure)."""
        pairs = [
            ("MaxResourceVolumeMB", str(self.resource_disk_mb)), ("OSVhdSizeMB", str(self.os_disk_mb)),
            ("vCPUs", str(self.vcpus)), ("HyperVGenerations", self.hyperv_generations),
            ("MemoryGB", self.memory_gb), ("MaxDataDiskCount", str(self.max_data_disks)),
            ("CpuArchitectureType", "x64"), ("LowPriorityCapable", str(self.low_priority)),
            ("PremiumIO", str(self.premium_io)), ("VMDeploymentTypes", "IaaS"),
            ("vCPUsAvailable", str(self.vcpus)), ("vCPUsPerCore", str(self.vcpus_per_core)),
            ("EncryptionAtHostSupported", str(self.premium_io)),
            ("AcceleratedNetworkingEnabled", str(self.accelerated_networking)), ("RdmaEnabled", "False"),
            ("MaxNetworkInterfaces", str(self.max_nics)),
        ]
        return [{"name": k, "value": v} for k, v in pairs]


def _series(family: str, *, premium: bool = True, per_core: int = 1, gens: str = "V1,V2", spot: bool = True,
            sizes: list[tuple[str, int, int, int, int, int, bool]]) -> list[VmSize]:
    """(name, vCPUs, memory MiB, temp disk MiB, max data disks, max NICs, accelerated networking)."""
    return [VmSize(name, family, cpu, mem, temp, disks, nics, premium, an, per_core, gens, spot)
            for name, cpu, mem, temp, disks, nics, an in sizes]


SIZES: tuple[VmSize, ...] = (
    # B-series (burstable)
    *_series("standardBSFamily", spot=False, sizes=[
        ("Standard_B1ls", 1, 512, 4096, 2, 2, False),
        ("Standard_B1s", 1, 1024, 4096, 2, 2, False),
        ("Standard_B1ms", 1, 2048, 4096, 2, 2, False),
        ("Standard_B2s", 2, 4096, 8192, 4, 3, False),
        ("Standard_B2ms", 2, 8192, 16384, 4, 3, False),
        ("Standard_B4ms", 4, 16384, 32768, 8, 4, False),
    ]),
    # Dsv3 (general purpose, hyper-threaded)
    *_series("standardDSv3Family", per_core=2, sizes=[
        ("Standard_D2s_v3", 2, 8192, 16384, 4, 2, False),
        ("Standard_D4s_v3", 4, 16384, 32768, 8, 2, True),
        ("Standard_D8s_v3", 8, 32768, 65536, 16, 4, True),
    ]),
    # Dsv5 (general purpose, no temp disk)
    *_series("standardDSv5Family", per_core=2, sizes=[
        ("Standard_D2s_v5", 2, 8192, 0, 4, 2, True),
        ("Standard_D4s_v5", 4, 16384, 0, 8, 2, True),
    ]),
    # Fs and Fsv2 (compute optimised)
    *_series("standardFSFamily", sizes=[
        ("Standard_F1s", 1, 2048, 4096, 4, 2, False),
    ]),
    *_series("standardFSv2Family", per_core=2, sizes=[
        ("Standard_F2s_v2", 2, 4096, 16384, 4, 2, False),
        ("Standard_F4s_v2", 4, 8192, 32768, 8, 2, True),
    ]),
    # Av2 (entry level: standard disks only, generation 1 only)
    *_series("standardAv2Family", premium=False, gens="V1", sizes=[
        ("Standard_A1_v2", 1, 2048, 10240, 2, 2, False),
        ("Standard_A2_v2", 2, 4096, 20480, 4, 2, False),
    ]),
    # DSv2
    *_series("standardDSv2Family", sizes=[
        ("Standard_DS1_v2", 1, 3584, 7168, 4, 2, False),
        ("Standard_DS2_v2", 2, 7168, 14336, 8, 2, True),
    ]),
)

_BY_NAME = {s.name.lower(): s for s in SIZES}


def lookup(name: str) -> VmSize | None:
    """The size called `name`, matched case-insensitively as ARM does (`standard_b1s` is Standard_B1s)."""
    return _BY_NAME.get(name.strip().lower())


def names() -> list[str]:
    return [s.name for s in SIZES]


def resize_options(current: str, *, max_vcpus: int | None = None, max_memory_mb: int | None = None) -> list[VmSize]:
    """Sizes a VM of size `current` can be resized to. Azure lists the sizes its current hardware
    cluster offers; kumo's one cluster is this host, so that is every size the host can run (no more
    vCPUs or memory than it has, when the limits are given). The current size is always included."""
    cur = lookup(current)
    return [s for s in SIZES
            if s is cur or ((max_vcpus is None or s.vcpus <= max_vcpus)
                            and (max_memory_mb is None or s.memory_mb <= max_memory_mb))]
