"""The network driver's contract: plain descriptions of what a VNet namespace and kumo's host table
must contain. The controller builds them from the store; the driver makes the host match them,
idempotently (running it twice changes nothing; after a crash it finishes the job)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

# Where every packet from or to an instance passes, Azure's gateway MAC (what guests see for .1).
GATEWAY_MAC = "12:34:56:78:9a:bc"
# Azure's address for the platform (health probes, DNS); the AzureLoadBalancer service tag.
AZURE_PLATFORM_IP = "168.63.129.16"
UPLINK = "uplink"  # the VNet namespace's link to the host


@dataclass(frozen=True)
class SubnetSpec:
    bridge: str  # link name in the VNet namespace
    gateway: ipaddress.IPv4Interface  # .1 of the subnet, with its prefix length


@dataclass(frozen=True)
class EndpointSpec:
    """A NIC plugged into a subnet bridge: a veth whose far end is `eth0` of its own namespace, or a
    tap a VM's QEMU opens (QEMU runs inside the VNet namespace)."""

    kind: Literal["netns", "tap"]
    port: str  # the link on the bridge, in the VNet namespace
    bridge: str
    mac: str  # aa:bb:cc:dd:ee:ff
    address: ipaddress.IPv4Interface  # private IP with the subnet's prefix length
    gateway: ipaddress.IPv4Address
    netns: str | None = None  # kind == "netns": the endpoint's own namespace


@dataclass(frozen=True)
class AddressMatch:
    """One alternative of a rule's source or destination: any of `networks`, or (negate) none of them."""

    networks: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class RuleSpec:
    """An NSG rule resolved to addresses: service tags already expanded by the controller."""

    priority: int
    allow: bool
    protocol: str  # tcp | udp | icmp | esp | ah | *
    sources: tuple[AddressMatch, ...] | None  # None: any address
    destinations: tuple[AddressMatch, ...] | None
    source_ports: tuple[str, ...] | None  # None: any port; else "80" or "1000-2000"
    destination_ports: tuple[str, ...] | None


@dataclass(frozen=True)
class GroupSpec:
    """A network security group as the chains of one VNet see it."""

    chain: str  # a name unique in the VNet, derived from the NSG
    inbound: tuple[RuleSpec, ...]
    outbound: tuple[RuleSpec, ...]


@dataclass(frozen=True)
class GuardSpec:
    """The NSGs that apply to one NIC address: the subnet's first inbound, the NIC's first outbound."""

    address: ipaddress.IPv4Address
    chain: str  # per NIC
    subnet_group: str | None
    nic_group: str | None


@dataclass(frozen=True)
class Uplink:
    host_link: str  # in kumo's (host) namespace
    host_address: ipaddress.IPv4Address  # /31 with vnet_address
    vnet_address: ipaddress.IPv4Address


@dataclass(frozen=True)
class PublicMapping:
    """A public IP of kumo's pool bound to a private IP in a VNet, through a host transit address
    (private None: a load balancer frontend, whose rules pick the backend per port)."""

    public: ipaddress.IPv4Address
    transit: ipaddress.IPv4Address
    private: ipaddress.IPv4Address | None


Backend = tuple[ipaddress.IPv4Address, int]  # (private IP, port)


@dataclass(frozen=True)
class BalancedPort:
    """A frontend address and port spread over backends: a load-balancing rule, or an inbound NAT
    rule (one backend). `backends` holds only those the health probe lets in; `members` every backend
    the rule maps, in rotation or not (flows to a member that leaves are flushed)."""

    frontend: ipaddress.IPv4Address  # a transit address (public frontend) or a private frontend IP
    protocol: str  # tcp | udp
    port: int
    backends: tuple[Backend, ...]
    distribution: str = "Default"  # Default (5-tuple) | SourceIP | SourceIPProtocol
    members: tuple[Backend, ...] = ()
    counter: str | None = None  # the load balancer's named counters (`<counter>_b`, `<counter>_s`)
    expire_when_down: bool = False  # Basic SKU: established flows end when no member is in rotation


@dataclass(frozen=True)
class OutboundSnat:
    """A load balancer's outbound rule for one pool member without a public IP of its own: new
    connections leave from the frontend's transit address (the host maps it to the public IP), with
    source ports from the member's own block."""

    private: ipaddress.IPv4Address
    transit: ipaddress.IPv4Address
    protocol: str  # tcp | udp
    ports: tuple[int, int]  # first and last source port


@dataclass(frozen=True)
class FlowMatch:
    """Established flows to delete from a VNet's conntrack table: those a load balancer translated from
    `frontend`:`port` (to `backend` only, or to any backend when it is None)."""

    protocol: str  # tcp | udp
    frontend: ipaddress.IPv4Address
    port: int
    backend: Backend | None = None


@dataclass
class VNetSpec:
    netns: str
    uplink: Uplink
    address_space: tuple[str, ...]
    subnets: list[SubnetSpec] = field(default_factory=list)
    endpoints: list[EndpointSpec] = field(default_factory=list)
    groups: list[GroupSpec] = field(default_factory=list)
    guards: list[GuardSpec] = field(default_factory=list)
    public: list[PublicMapping] = field(default_factory=list)
    balanced: list[BalancedPort] = field(default_factory=list)
    outbound: list[OutboundSnat] = field(default_factory=list)


@dataclass
class HostSpec:
    """kumo's own table in the host namespace and the routes to each VNet's public mappings."""

    table: str
    link_prefix: str  # every uplink's host end starts with this
    vnets: list[VNetSpec] = field(default_factory=list)
