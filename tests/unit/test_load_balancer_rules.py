"""Load balancers beyond the basics: inbound NAT pools and range rules (one frontend port per member,
stable as members come and go, shown where Azure shows them and planned on the same ports), outbound
rules (Azure's validation, SNAT port blocks), which flows a re-render flushes, and the counters'
nftables (accepted by the kernel in a scratch namespace)."""

from __future__ import annotations

import copy
import ipaddress
import subprocess
from typing import Any

import pytest

from kumo.arm.errors import ArmError
from kumo.arm.ids import parse_resource_id
from kumo.controllers import load_balancing
from kumo.drivers.network import nftables
from kumo.drivers.network.spec import BalancedPort, FlowMatch, OutboundSnat, Uplink, VNetSpec
from kumo.providers.network.load_balancers import LoadBalancers, _settle, assign_ports
from kumo.store import Resource

SUB = "/subscriptions/s/resourceGroups/rg/providers"
LB = f"{SUB}/Microsoft.Network/loadBalancers/lb"
SUBNET = f"{SUB}/Microsoft.Network/virtualNetworks/v/subnets/s"
PIP = f"{SUB}/Microsoft.Network/publicIPAddresses/p"
IP = ipaddress.IPv4Address


def cfg(n: int | str) -> str:
    """A Uniform scale set instance's ip configuration, as Azure names it."""
    return f"{SUB}/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/{n}/networkInterfaces/nic/" \
           "ipConfigurations/ipc"


def lb_body(sku: str = "Standard", **extra: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {"id": PIP}}},
                                     {"name": "in", "properties": {"subnet": {"id": SUBNET}}}],
        "backendAddressPools": [{"name": "pool"}],
        "inboundNatPools": [{"name": "ssh", "properties": {
            "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"}, "protocol": "Tcp",
            "frontendPortRangeStart": 50000, "frontendPortRangeEnd": 50002, "backendPort": 22}}],
        "inboundNatRules": [{"name": "range", "properties": {
            "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"}, "protocol": "Tcp",
            "backendAddressPool": {"id": f"{LB}/backendAddressPools/pool"},
            "frontendPortRangeStart": "51000", "frontendPortRangeEnd": "51119", "backendPort": 3389}}]}
    for key, value in extra.items():
        props[key] = value
    return {"sku": {"name": sku}, "properties": props}


def normalise(body: dict[str, Any]) -> dict[str, Any]:
    rid = parse_resource_id(LB)
    assert rid is not None
    return LoadBalancers(ipaddress.IPv4Network("127.77.0.0/16")).normalise(rid, body, None)


def code_of(body: dict[str, Any]) -> str:
    with pytest.raises(ArmError) as e:
        normalise(body)
    return e.value.code


def join_pool(props: dict[str, Any], *cfgs: str) -> None:
    props["backendAddressPools"][0]["properties"]["backendIPConfigurations"] = [{"id": c} for c in cfgs]


def nat_pool_ports(props: dict[str, Any]) -> dict[str, int]:
    """instance -> frontend port, from the NAT rules the NAT pool derived."""
    return {r["properties"]["backendIPConfiguration"]["id"].split("/")[-5]: r["properties"]["frontendPort"]
            for r in props["inboundNatRules"] if r["name"].startswith("ssh.")}


def range_ports(props: dict[str, Any]) -> dict[str, int]:
    out = {}
    for a in props["backendAddressPools"][0]["properties"]["loadBalancerBackendAddresses"]:
        instance = a["properties"]["networkInterfaceIPConfiguration"]["id"].split("/")[-5]
        out[instance] = a["properties"]["inboundNatRulesPortMapping"][0]["frontendPort"]
    return out


def flexible(n: int) -> str:
    """A Flexible scale set's (or any VM's) ip configuration: no instance number in it."""
    return f"{SUB}/Microsoft.Network/networkInterfaces/ss_vm{n}/ipConfigurations/ipc"


def test_nat_pool_members_get_stable_ports_in_natural_order() -> None:
    props = normalise(lb_body())["properties"]
    assert props["inboundNatRules"][0]["properties"]["frontendPortRangeEnd"] == 51119  # az sends strings
    flex = copy.deepcopy(props)  # (the ids end in ss_vm10 and ss_vm2: natural order puts 2 first)
    assign_ports(LB, flex, copy.deepcopy(props), {"ssh": {flexible(10): True, flexible(2): True}})
    assert {r["properties"]["backendIPConfiguration"]["id"]: r["properties"]["frontendPort"]
            for r in flex["inboundNatRules"] if r["name"].startswith("ssh.")} == {flexible(2): 50000,
                                                                                    flexible(10): 50001}
    # a Uniform instance N takes start + N as on Azure when that is free; 10 does not fit, takes the lowest
    assign_ports(LB, props, copy.deepcopy(props), {"ssh": {cfg(10): True, cfg(2): True}})
    assert nat_pool_ports(props) == {"2": 50002, "10": 50000}
    assign_ports(LB, props, copy.deepcopy(props), {"ssh": {cfg(2): False, cfg(10): False, cfg(0): True,
                                                           cfg(1): True}})
    assert nat_pool_ports(props) == {"0": 50000, "1": 50001}
    assign_ports(LB, props, copy.deepcopy(props), {"ssh": {cfg(10): True}})
    assert nat_pool_ports(props) == {"0": 50000, "1": 50001, "10": 50002}
    derived = {r["name"]: r for r in props["inboundNatRules"]}
    assert set(derived) == {"range", "ssh.0", "ssh.1", "ssh.2"}
    assert derived["ssh.0"]["id"] == f"{LB}/inboundNatRules/ssh.0"
    assert derived["ssh.0"]["properties"]["backendPort"] == 22
    # instance 0 leaves, 5 joins: the others keep their ports, 5 takes the free one
    before = copy.deepcopy(props)
    assign_ports(LB, props, before, {"ssh": {cfg(0): False, cfg(5): True}})
    assert nat_pool_ports(props) == {"5": 50000, "1": 50001, "10": 50002}
    assert {r["name"] for r in props["inboundNatRules"]} == {"range", "ssh.0", "ssh.1", "ssh.2"}
    # an unchanged member rule keeps its etag (no needless rewrite of its row)
    kept = next(r for r in props["inboundNatRules"] if r["name"] == "ssh.1")
    assert kept["etag"] == next(r for r in before["inboundNatRules"] if r["name"] == "ssh.1")["etag"]
    # the range holds three ports: a fourth member does not fit
    with pytest.raises(ArmError) as e:
        assign_ports(LB, props, copy.deepcopy(props), {"ssh": {cfg(7): True}})
    assert e.value.code == "FrontendPortRangeExhausted"


def test_range_rule_ports_show_in_the_pool_and_survive_a_put() -> None:
    body = lb_body()
    props = normalise(body)["properties"]
    join_pool(props, cfg(0), cfg(1), cfg(2))
    _settle(LB, props, {})
    assert range_ports(props) == {"0": 51000, "1": 51001, "2": 51002}
    address = props["backendAddressPools"][0]["properties"]["loadBalancerBackendAddresses"][0]
    assert address["name"] == "ss_0_nic_ipc"
    assert address["properties"]["inboundNatRulesPortMapping"] == [
        {"inboundNatRuleName": "range", "frontendPort": 51000, "backendPort": 3389}]
    # the pool shows the rule that uses it, the frontend every rule on it
    assert props["backendAddressPools"][0]["properties"]["inboundNatRules"] == [{"id": f"{LB}/inboundNatRules/range"}]
    assert {"id": f"{LB}/inboundNatPools/ssh"} in props["frontendIPConfigurations"][0]["properties"]["inboundNatPools"]
    # member 1 leaves; a PUT of the load balancer with a narrower range keeps who still fits
    stored = copy.deepcopy(props)
    join_pool(stored, cfg(0), cfg(2))
    body["properties"]["inboundNatRules"][0]["properties"]["frontendPortRangeStart"] = 51001
    again = normalise(body)["properties"]
    join_pool(again, cfg(0), cfg(2))
    _settle(LB, again, stored)
    assert range_ports(again) == {"0": 51001, "2": 51002}


def test_a_put_that_echoes_derived_rules_keeps_them_derived() -> None:
    props = normalise(lb_body())["properties"]
    assign_ports(LB, props, copy.deepcopy(props), {"ssh": {cfg(0): True}})
    echoed = lb_body()
    echoed["properties"]["inboundNatRules"] = copy.deepcopy(props["inboundNatRules"])  # as a GET shows them
    fresh = normalise(echoed)["properties"]
    assert [r["name"] for r in fresh["inboundNatRules"]] == ["range"]
    _settle(LB, fresh, props)
    assert nat_pool_ports(fresh) == {"0": 50000}
    # dropping the NAT pool while a member uses it is refused
    gone = lb_body(inboundNatPools=[])
    stripped = normalise(gone)["properties"]
    with pytest.raises(ArmError) as e:
        _settle(LB, stripped, props)
    assert e.value.code == "InUseInboundNatPoolCannotBeDeleted"


@pytest.mark.parametrize(("change", "code"), [
    # a NAT pool's range over a load-balancing rule's port
    ({"loadBalancingRules": [{"name": "web", "properties": {
        "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"},
        "backendAddressPool": {"id": f"{LB}/backendAddressPools/pool"}, "protocol": "Tcp", "frontendPort": 50001,
        "backendPort": 80}}]}, "RulesUseSameFrontendIpAndPort"),
    ({"inboundNatPools": [{"name": "ssh", "properties": {
        "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"}, "protocol": "Udp",
        "frontendPortRangeStart": 50000, "frontendPortRangeEnd": 40000, "backendPort": 22}}]}, "InvalidRequestFormat"),
    ({"inboundNatPools": [{"name": "ssh", "properties": {
        "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/nope"}, "protocol": "Tcp",
        "frontendPortRangeStart": 50000, "frontendPortRangeEnd": 50001, "backendPort": 22}}]},
     "InvalidResourceReference"),
    ({"inboundNatRules": [{"name": "r", "properties": {
        "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"}, "protocol": "Tcp",
        "backendAddressPool": {"id": f"{LB}/backendAddressPools/pool"}, "frontendPort": 22, "backendPort": 22}}]},
     "MissedInboundNatRuleV2Properties"),
    ({"inboundNatRules": [{"name": "r", "properties": {
        "frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"}, "protocol": "Tcp",
        "frontendPort": 22, "frontendPortRangeStart": 100, "frontendPortRangeEnd": 200, "backendPort": 22}}]},
     "UnsupportedSetOfInboundNatRulePropertiesWhenFrontendPortIsSpecified"),
])
def test_nat_validation_uses_azures_codes(change: dict[str, Any], code: str) -> None:
    assert code_of(lb_body(**change)) == code


def outbound(name: str = "out", **props: Any) -> dict[str, Any]:
    base = {"frontendIPConfigurations": [{"id": f"{LB}/frontendIPConfigurations/fe"}],
            "backendAddressPool": {"id": f"{LB}/backendAddressPools/pool"}, "protocol": "All"}
    return {"name": name, "properties": {**base, **props}}


def test_outbound_rules_are_validated_as_azure_does() -> None:
    props = normalise(lb_body(outboundRules=[outbound(allocatedOutboundPorts=1000, enableTcpReset=True)]))["properties"]
    rule = props["outboundRules"][0]["properties"]
    assert (rule["allocatedOutboundPorts"], rule["idleTimeoutInMinutes"], rule["enableTcpReset"]) == (1000, 4, True)
    assert props["backendAddressPools"][0]["properties"]["outboundRule"] == {"id": f"{LB}/outboundRules/out"}
    assert props["frontendIPConfigurations"][0]["properties"]["outboundRules"] == [{"id": f"{LB}/outboundRules/out"}]
    assert code_of(lb_body(outboundRules=[outbound(allocatedOutboundPorts=1001)])) == \
        "SpecifiedAllocatedOutboundPortsForOutboundRuleIsNotAMultipleOfEight"
    assert code_of(lb_body(outboundRules=[outbound(allocatedOutboundPorts=64008)])) == \
        "SpecifiedAllocatedOutboundPortsForOutboundRuleExceedsTotalNumberOfAllowedPortsPerRule"
    assert code_of(lb_body("Basic", outboundRules=[outbound()])) == "OutboundRuleCannotBeUsedWithLoadBalancerSku"
    assert code_of(lb_body(outboundRules=[outbound(), outbound("udp", protocol="Udp")])) == \
        "MoreThanOneOutboundRuleUsingSameFrontendIPConfigurationAndProtocolIsNotSupported"
    assert code_of(lb_body(outboundRules=[outbound(frontendIPConfigurations=[
        {"id": f"{LB}/frontendIPConfigurations/in"}])])) == "OutboundRuleCannotUsePrivateFrontendIPConfiguration"
    web = {"name": "web", "properties": {"frontendIPConfiguration": {"id": f"{LB}/frontendIPConfigurations/fe"},
                                         "backendAddressPool": {"id": f"{LB}/backendAddressPools/pool"},
                                         "protocol": "Tcp", "frontendPort": 80}}
    assert code_of(lb_body(outboundRules=[outbound()], loadBalancingRules=[web])) == \
        "LoadBalancingRuleMustDisableSNATSinceSameFrontendIPConfigurationIsReferencedByOutboundRule"
    web["properties"]["disableOutboundSnat"] = True
    normalise(lb_body(outboundRules=[outbound()], loadBalancingRules=[web]))
    # 65 members at 1000 ports each need more than one frontend IP's 64,000
    crowded = normalise(lb_body(outboundRules=[outbound(allocatedOutboundPorts=1000)]))["properties"]
    join_pool(crowded, *(cfg(i) for i in range(65)))
    with pytest.raises(ArmError) as e:
        _settle(LB, crowded, {})
    assert e.value.code == "SpecifiedAllocatedOutboundPortsForOutboundRuleExceedsTotalNumberOfAvailablePorts"


def nic(name: str, address: str, *, pools: list[str] = (), nat_pools: list[str] = (), public: bool = False,
        config: str | None = None) -> Resource:
    cfg_id = config or f"{SUB}/Microsoft.Network/networkInterfaces/{name}/ipConfigurations/c"
    props: dict[str, Any] = {"privateIPAddress": address, "subnet": {"id": SUBNET},
                             "loadBalancerBackendAddressPools": [{"id": p} for p in pools],
                             "loadBalancerInboundNatPools": [{"id": p} for p in nat_pools]}
    if public:
        props["publicIPAddress"] = {"id": f"{SUB}/Microsoft.Network/publicIPAddresses/{name}"}
    key = cfg_id.lower().split("/ipconfigurations/")[0]
    return Resource(key=key, id=key, subscription_id="s", resource_group="rg", type="", name=name,
                    body={"properties": {"ipConfigurations": [{"id": cfg_id, "name": "c", "properties": props}]}})


def test_the_plan_maps_the_ports_the_api_shows() -> None:
    body = lb_body(outboundRules=[outbound(allocatedOutboundPorts=8000, protocol="Tcp")])
    props = normalise(body)["properties"]
    pool = f"{LB}/backendAddressPools/pool"
    nics = {n.key: n for n in (
        nic("a", "10.0.0.4", pools=[pool], nat_pools=[f"{LB}/inboundNatPools/ssh"], config=cfg(0)),
        nic("b", "10.0.0.5", pools=[pool], nat_pools=[f"{LB}/inboundNatPools/ssh"], config=cfg(1), public=True),
        nic("c", "10.0.0.6", pools=[pool], config=cfg(2)))}
    join_pool(props, cfg(0), cfg(1), cfg(2))
    _settle(LB, props, {}, {"ssh": {cfg(0): True, cfg(1): True}})
    lb = Resource(key=LB.lower(), id=LB, subscription_id="s", resource_group="rg", type="", name="lb",
                  body={"sku": {"name": "Standard"}, "properties": props})
    pip = Resource(key=PIP.lower(), id=PIP, subscription_id="s", resource_group="rg", type="", name="p",
                   body={"properties": {"ipAddress": "127.77.0.9"}})
    fe = f"{LB}/frontendIPConfigurations/fe".lower()
    transit = IP("169.254.8.3")
    plan = load_balancing.plan("/subscriptions/s/resourcegroups/rg/providers/microsoft.network/virtualnetworks/v",
                               {lb.key: lb}, nics, {pip.key: pip}, {fe: transit}, {})
    ports = {(b.port, b.backends) for b in plan.balanced}
    assert (50000, ((IP("10.0.0.4"), 22),)) in ports and (50001, ((IP("10.0.0.5"), 22),)) in ports
    assert {(b.port, b.backends[0][0]) for b in plan.balanced if b.port >= 51000} == {
        (51000, IP("10.0.0.4")), (51001, IP("10.0.0.5")), (51002, IP("10.0.0.6"))}
    assert all(b.counter == load_balancing.counter_name(lb.key) for b in plan.balanced)
    # outbound: blocks of 8000 ports by member order; b has a public IP of its own and keeps it
    assert plan.outbound == [OutboundSnat(IP("10.0.0.4"), transit, "tcp", (1024, 9023)),
                             OutboundSnat(IP("10.0.0.6"), transit, "tcp", (17024, 25023))]


def test_flushes_follow_membership_not_health() -> None:
    fe, a, b = IP("169.254.8.3"), (IP("10.0.0.4"), 80), (IP("10.0.0.5"), 80)
    both = [BalancedPort(fe, "tcp", 80, (a, b), members=(a, b))]
    # b fails its probe: out of rotation, its flows stay (Standard)
    assert load_balancing.flows_to_flush(both, [BalancedPort(fe, "tcp", 80, (a,), members=(a, b))]) == []
    # b leaves the pool: its flows go
    assert load_balancing.flows_to_flush(both, [BalancedPort(fe, "tcp", 80, (a,), members=(a,))]) == [
        FlowMatch("tcp", fe, 80, b)]
    # Basic: the last backend in rotation goes down, every flow of the port expires
    basic = [BalancedPort(fe, "tcp", 80, (), members=(a, b), expire_when_down=True)]
    assert load_balancing.flows_to_flush(both, basic) == [FlowMatch("tcp", fe, 80)]


def nft(netns: str, ruleset: str, check: bool = False) -> None:
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", *(["-c"] if check else []), "-f", "-"],
                          input=ruleset, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + ruleset


def test_counters_and_outbound_snat_render_valid_nftables(scratch_netns: str) -> None:
    fe, a = IP("169.254.8.3"), (IP("10.0.0.4"), 80)
    spec = VNetSpec("x", Uplink("k0hx", IP("169.254.0.0"), IP("169.254.0.1")), ("10.0.0.0/16",),
                    balanced=[BalancedPort(fe, "tcp", 80, (a,), members=(a,), counter="lfirst"),
                              BalancedPort(fe, "udp", 53, (a,), members=(a,), counter="lfirst"),
                              BalancedPort(IP("10.0.0.100"), "tcp", 8080, (), counter="lsecond")],
                    outbound=[OutboundSnat(IP("10.0.0.4"), fe, "tcp", (1024, 2047)),
                              OutboundSnat(IP("10.0.0.4"), fe, "udp", (1024, 2047))])
    nft(scratch_netns, nftables.vnet_ruleset(spec), check=True)
    assert 'ip saddr 10.0.0.4 meta l4proto tcp snat ip to 169.254.8.3:1024-2047' in nftables.vnet_ruleset(spec)
    stats = nftables.stats_ruleset(spec)
    assert "tcp dport 53" not in stats  # SYNs are counted for TCP ports only
    nft(scratch_netns, stats)
    nft(scratch_netns, stats)  # again: declaring existing counters is fine
    # the second load balancer leaves: its counters go, the first's stay
    spec.balanced = spec.balanced[:2]
    nft(scratch_netns, nftables.stats_ruleset(spec, {"lsecond_b", "lsecond_s"}))
    listed = subprocess.run(["ip", "netns", "exec", scratch_netns, "nft", "list", "table", "inet", "kumo_lb"],
                            capture_output=True, text=True, check=True).stdout
    assert "lfirst_b" in listed and "lsecond" not in listed
    spec.balanced = []
    nft(scratch_netns, nftables.stats_ruleset(spec))  # nothing to count: the table goes
    nft(scratch_netns, nftables.stats_ruleset(spec))


class _Tick:
    def __init__(self, mono: float, keys: list[str]) -> None:
        self.mono, self.keys, self.values = mono, keys, {}

    async def rows(self, resource_type: str) -> list[Resource]:
        return [Resource(key=k, id=k, subscription_id="s", resource_group="rg", type=resource_type, name="lb", body={})
                for k in self.keys]


class _Network:
    unavailable = None

    def __init__(self) -> None:
        self.stats: dict[str, load_balancing.LoadBalancerStats] = {}

    async def load_balancer_stats(self, key: str) -> load_balancing.LoadBalancerStats:
        return self.stats.get(key, load_balancing.LoadBalancerStats())


async def test_the_metric_source_turns_counters_into_amounts_per_round() -> None:
    from kumo.controllers.metrics.load_balancers import LoadBalancerSource

    network = _Network()
    source = LoadBalancerSource(network)  # type: ignore[arg-type]
    served = ("v1",)
    network.stats["a"] = load_balancing.LoadBalancerStats(1000, 10, 2, 1, 2, 1, 1, served)
    keys = ["a", "idle"]  # "idle" serves no VNet: no values at all
    first = await source.collect(_Tick(1.0, keys))  # type: ignore[arg-type]
    assert first == {"a": {"DipAvailability": 50.0, "VipAvailability": 100.0}}  # no amount without a previous reading
    network.stats["a"] = load_balancing.LoadBalancerStats(3000, 25, 5, 2, 2, 0, 1, served)
    second = await source.collect(_Tick(6.0, keys))  # type: ignore[arg-type]
    assert second == {"a": {"ByteCount": 2000.0, "PacketCount": 15.0, "SYNCount": 3.0, "DipAvailability": 100.0,
                            "VipAvailability": 0.0}}
    # the load balancer moved to other VNets (its counters are new there): no amount is made up
    network.stats["a"] = load_balancing.LoadBalancerStats(50, 1, 1, 0, 0, 0, 0, ("v2",))
    assert await source.collect(_Tick(11.0, keys)) == {}  # type: ignore[arg-type]
