"""Metrics of load balancers, from kumo's own data path (docs/networking.md, "Load balancers"):

* ByteCount, PacketCount: the growth over the round of the load balancer's nftables counter `<lb>_b` in each
  VNet it serves, which counts every packet (both directions) of the flows its frontend ports translated
  (load-balancing and NAT rules).
* SYNCount: the growth of `<lb>_s`, the TCP SYNs that reached one of its frontend ports.
* DipAvailability (Health Probe Status): the percentage of (health probe, backend) pairs in rotation at the
  round, as kumo's prober sees them; no value for a load balancer without probes.
* VipAvailability (Data Path Availability): the percentage of its load-balancing rules (per frontend port
  and VNet) with at least one backend in rotation, so 100 while every frontend port has a healthy backend.
  Azure measures it with synthetic traffic through the frontend; kumo's frontends are nftables rules that
  answer whenever they have a backend, so that is what it reports. No value without rules.

A load balancer that serves no VNet (no member in any pool) gets no value."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from kumo.controllers.metrics.base import Deltas, MetricDefinition, MetricSource, Tick, Values

if TYPE_CHECKING:
    from kumo.controllers.network import NetworkController

LB_TYPE = "microsoft.network/loadbalancers"
BYTES, PACKETS, SYNS = "ByteCount", "PacketCount", "SYNCount"
DIP, VIP = "DipAvailability", "VipAvailability"

# Azure's definitions (Microsoft.Network/loadBalancers)
DEFINITIONS = (
    MetricDefinition(VIP, "Data Path Availability", "Count", "Average",
                     "Average Load Balancer data path availability per time duration"),
    MetricDefinition(DIP, "Health Probe Status", "Count", "Average",
                     "Average Load Balancer health probe status per time duration"),
    MetricDefinition(BYTES, "Byte Count", "Bytes", "Total", "Total number of Bytes transmitted within time period"),
    MetricDefinition(PACKETS, "Packet Count", "Count", "Total",
                     "Total number of Packets transmitted within time period"),
    MetricDefinition(SYNS, "SYN Count", "Count", "Total", "Total number of SYN Packets transmitted within time period"),
)


class LoadBalancerSource(MetricSource):
    resource_type = LB_TYPE
    namespace = "Microsoft.Network/loadBalancers"
    definitions = DEFINITIONS

    def __init__(self, network: "NetworkController") -> None:
        self.network = network
        self.deltas = Deltas()

    async def collect(self, tick: Tick) -> Values:
        if self.network.unavailable:
            return {}
        keys = [lb.key for lb in await tick.rows(LB_TYPE)]
        stats = await asyncio.gather(*(self.network.load_balancer_stats(k) for k in keys))
        served = {k: s for k, s in zip(keys, stats, strict=True) if s.vnets}
        self.deltas.forget(set(served))
        values: Values = {}
        for key, s in served.items():
            measured = {}
            # counters are made with the load balancer's first rule in a VNet: another set of VNets starts over
            got = self.deltas.update(key, s.vnets, tick.mono, {BYTES: float(s.byte_count),
                                                               PACKETS: float(s.packet_count),
                                                               SYNS: float(s.syn_count)})
            if got is not None:
                measured.update(got[1])
            if s.probes_total:
                measured[DIP] = 100.0 * s.probes_up / s.probes_total
            if s.rules_total:
                measured[VIP] = 100.0 * s.rules_up / s.rules_total
            if measured:
                values[key] = measured
        return values
