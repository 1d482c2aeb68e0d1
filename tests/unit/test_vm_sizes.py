"""The VM size catalogue: Azure's numbers, lookups as ARM matches names, resize options."""

from __future__ import annotations

from kumo.compute import sizes

REQUIRED = ["Standard_B1ls", "Standard_B1s", "Standard_B1ms", "Standard_B2s", "Standard_B2ms", "Standard_B4ms",
            "Standard_D2s_v3", "Standard_D4s_v3", "Standard_D8s_v3", "Standard_D2s_v5", "Standard_D4s_v5",
            "Standard_F1s", "Standard_F2s_v2", "Standard_F4s_v2", "Standard_A1_v2", "Standard_A2_v2",
            "Standard_DS1_v2", "Standard_DS2_v2"]


def test_catalogue_has_the_sizes_the_issue_names() -> None:
    assert set(REQUIRED) <= set(sizes.names())
    assert len(set(n.lower() for n in sizes.names())) == len(sizes.SIZES)


def test_numbers_are_azures() -> None:
    # as `az vm list-sizes` reports them in Azure regions
    assert sizes.lookup("Standard_B1s").vm_size_body() == {
        "name": "Standard_B1s", "numberOfCores": 1, "osDiskSizeInMB": 1047552, "resourceDiskSizeInMB": 4096,
        "memoryInMB": 1024, "maxDataDiskCount": 2}
    expected = {  # name: (vCPUs, memory MiB, temp disk MiB, max data disks)
        "Standard_B1ls": (1, 512, 4096, 2), "Standard_B1ms": (1, 2048, 4096, 2), "Standard_B2s": (2, 4096, 8192, 4),
        "Standard_B2ms": (2, 8192, 16384, 4), "Standard_B4ms": (4, 16384, 32768, 8),
        "Standard_D2s_v3": (2, 8192, 16384, 4), "Standard_D4s_v3": (4, 16384, 32768, 8),
        "Standard_D8s_v3": (8, 32768, 65536, 16), "Standard_D2s_v5": (2, 8192, 0, 4),
        "Standard_D4s_v5": (4, 16384, 0, 8), "Standard_F1s": (1, 2048, 4096, 4),
        "Standard_F2s_v2": (2, 4096, 16384, 4), "Standard_F4s_v2": (4, 8192, 32768, 8),
        "Standard_A1_v2": (1, 2048, 10240, 2), "Standard_A2_v2": (2, 4096, 20480, 4),
        "Standard_DS1_v2": (1, 3584, 7168, 4), "Standard_DS2_v2": (2, 7168, 14336, 8),
    }
    for name, numbers in expected.items():
        s = sizes.lookup(name)
        assert s is not None and (s.vcpus, s.memory_mb, s.resource_disk_mb, s.max_data_disks) == numbers, name


def test_lookup_ignores_case_and_refuses_unknown_names() -> None:
    assert sizes.lookup("standard_b1S") is sizes.lookup("Standard_B1s")
    assert sizes.lookup(" STANDARD_D2S_V3 ").name == "Standard_D2s_v3"
    assert sizes.lookup("Standard_B1") is None and sizes.lookup("") is None


def test_capabilities_as_list_skus_shows_them() -> None:
    caps = {c["name"]: c["value"] for c in sizes.lookup("Standard_DS1_v2").capabilities()}
    assert caps["vCPUs"] == "1" and caps["MemoryGB"] == "3.5" and caps["MaxDataDiskCount"] == "4"
    assert caps["PremiumIO"] == "True" and caps["CpuArchitectureType"] == "x64"
    assert caps["HyperVGenerations"] == "V1,V2" and caps["MaxResourceVolumeMB"] == "7168"
    assert {c["name"]: c["value"] for c in sizes.lookup("Standard_B1ls").capabilities()}["MemoryGB"] == "0.5"
    a1 = {c["name"]: c["value"] for c in sizes.lookup("Standard_A1_v2").capabilities()}
    assert a1["PremiumIO"] == "False" and a1["HyperVGenerations"] == "V1"
    assert all(isinstance(c["value"], str) for s in sizes.SIZES for c in s.capabilities())
    assert sizes.lookup("Standard_F2s_v2").size == "F2s_v2"


def test_resize_options_are_the_sizes_the_host_can_run() -> None:
    assert [s.name for s in sizes.resize_options("Standard_B1s")] == sizes.names()
    small = [s.name for s in sizes.resize_options("Standard_B1s", max_vcpus=2, max_memory_mb=4096)]
    assert "Standard_B1s" in small and "Standard_B2s" in small and "Standard_A2_v2" in small
    assert "Standard_B2ms" not in small and "Standard_D4s_v3" not in small
    # the current size is always an option, even when the host could not start it now
    assert "Standard_D8s_v3" in [s.name for s in sizes.resize_options("standard_d8s_v3", max_vcpus=2)]
