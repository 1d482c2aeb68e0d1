"""NSG rules to nftables: service tags, port ranges and prefix lists resolve as Azure defines them,
and every rendered ruleset is accepted by the kernel (checked with `nft -c` in a scratch namespace)."""

from __future__ import annotations

import ipaddress
import subprocess


from kumo.controllers.network import _group, _matches
from kumo.drivers.network import nftables
from kumo.drivers.network.spec import (AddressMatch, BalancedPort, EndpointSpec, GuardSpec, HostSpec, PublicMapping,
                                       SubnetSpec, Uplink, VNetSpec)
from kumo.providers.network.security_groups import default_rules, rule_props
from kumo.store import Resource

SPACE = ("10.0.0.0/16", "10.1.0.0/24")


def test_service_tags_resolve_as_azure_defines_them() -> None:
    assert _matches(["*"], SPACE) is None
    assert _matches(["VirtualNetwork"], SPACE) == (AddressMatch(SPACE),)
    assert _matches(["AzureLoadBalancer"], SPACE) == (AddressMatch(("168.63.129.16",)),)
    # Internet: anything outside the VNet and the platform address
    assert _matches(["Internet"], SPACE) == (AddressMatch((*SPACE, "168.63.129.16"), negate=True),)
    both = _matches(["192.168.1.0/24", "Internet", "10.9.9.9"], SPACE)
    assert both == (AddressMatch(("192.168.1.0/24", "10.9.9.9")), AddressMatch((*SPACE, "168.63.129.16"), True))


def _nsg(*rules: dict) -> Resource:
    nsg_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n"
    body = {"properties": {"securityRules": [{"name": r["name"], "properties": rule_props(r["name"], r)}
                                             for r in rules], "defaultSecurityRules": default_rules(nsg_id)}}
    return Resource(key=nsg_id.lower(), id=nsg_id, subscription_id="s", resource_group="rg",
                    type="microsoft.network/networksecuritygroups", name="n", body=body)


def _rule(name: str, priority: int, **props: object) -> dict:
    base = {"priority": priority, "access": "Allow", "direction": "Inbound", "protocol": "Tcp",
            "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
            "destinationPortRange": "*"}
    return {"name": name, "properties": {**base, **props}}


RULES = [
    _rule("ssh", 100, destinationPortRange="22"),
    _rule("web", 110, destinationPortRange=None, destinationPortRanges=["80", "443", "8000-8100"]),
    _rule("udp", 120, protocol="Udp", sourcePortRange="53", sourceAddressPrefix="VirtualNetwork"),
    _rule("icmp", 130, protocol="Icmp", destinationPortRange="7"),  # ports mean nothing for ICMP
    _rule("any", 140, protocol="*", destinationPortRange="9000"),
    _rule("tags", 150, access="Deny", sourceAddressPrefix=None,
          sourceAddressPrefixes=["Internet", "AzureLoadBalancer", "203.0.113.0/24"]),
    _rule("esp", 160, protocol="Esp", direction="Outbound", destinationAddressPrefix="Internet"),
]


def test_rules_keep_priority_order_and_verdicts() -> None:
    group = _group("gtest", _nsg(*RULES), SPACE)
    assert [r.priority for r in group.inbound] == [100, 110, 120, 130, 140, 150, 65000, 65001, 65500]
    assert [r.priority for r in group.outbound] == [160, 65000, 65001, 65500]
    lines = "\n".join(nftables._group_chains(group))
    assert 'meta l4proto tcp th dport { 22 } return comment "priority 100"' in lines
    assert "th dport { 80, 443, 8000-8100 }" in lines
    assert "meta l4proto { tcp, udp } th dport { 9000 }" in lines
    assert 'meta l4proto icmp return comment "priority 130"' in lines
    # a rule with alternatives becomes one line per alternative, all with its verdict
    assert lines.count('comment "priority 150"') == 2 and 'drop comment "priority 65500"' in lines


def test_rendered_rulesets_are_valid_nftables(scratch_netns: str) -> None:
    group = _group("gtest", _nsg(*RULES), SPACE)
    spec = VNetSpec(
        netns="x", address_space=SPACE,
        uplink=Uplink("k0hx", ipaddress.IPv4Address("169.254.0.0"), ipaddress.IPv4Address("169.254.0.1")),
        subnets=[SubnetSpec("bx", ipaddress.IPv4Interface("10.0.0.1/24"))],
        endpoints=[EndpointSpec("netns", "ex", "bx", "00:0d:3a:00:00:01", ipaddress.IPv4Interface("10.0.0.4/24"),
                                ipaddress.IPv4Address("10.0.0.1"), "nsx")],
        groups=[group], guards=[GuardSpec(ipaddress.IPv4Address("10.0.0.4"), "nx", "gtest", "gtest")],
        public=[PublicMapping(ipaddress.IPv4Address("127.77.0.4"), ipaddress.IPv4Address("169.254.8.0"),
                              ipaddress.IPv4Address("10.0.0.4")),
                PublicMapping(ipaddress.IPv4Address("127.77.0.5"), ipaddress.IPv4Address("169.254.8.1"), None)],
        balanced=[BalancedPort(ipaddress.IPv4Address("169.254.8.1"), "tcp", 80,
                               ((ipaddress.IPv4Address("10.0.0.4"), 8080), (ipaddress.IPv4Address("10.0.0.5"), 8080)),
                               distribution)
                  for distribution in ("Default", "SourceIP", "SourceIPProtocol")] +
                 [BalancedPort(ipaddress.IPv4Address("10.0.0.100"), "udp", 53, ()),
                  BalancedPort(ipaddress.IPv4Address("10.0.0.100"), "udp", 54,
                               ((ipaddress.IPv4Address("10.0.0.4"), 53),))])
    host = HostSpec("kumo_site0", "k0h", [spec])
    for ruleset in (nftables.vnet_ruleset(spec), nftables.vnet_ruleset(VNetSpec("x", spec.uplink, SPACE)),
                    nftables.host_ruleset(host), nftables.host_ruleset(HostSpec("kumo_site0", "k0h", []))):
        proc = subprocess.run(["ip", "netns", "exec", scratch_netns, "nft", "-c", "-f", "-"], input=ruleset,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + ruleset
