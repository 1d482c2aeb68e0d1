"""nftables rulesets for a VNet namespace and for kumo's table in the host namespace, rendered as
text for `nft -f` and always loaded as one transaction that replaces the table whole."""

from __future__ import annotations

import itertools
from collections.abc import Collection

from kumo.drivers.network.spec import (UPLINK, AddressMatch, BalancedPort, GroupSpec, GuardSpec, HostSpec,
                                       OutboundSnat, RuleSpec, VNetSpec)

VNET_TABLE = "kumo"  # inside a VNet namespace everything is kumo's; one name, two families
# the load balancers' counters: a table of its own, never replaced whole, so they keep counting
# across re-renders of the VNet's table (a counter goes only with its load balancer)
STATS_TABLE = "kumo_lb"


def replace_table(family: str, name: str, body: list[str]) -> str:
    """Create-if-missing, delete, re-create: one atomic transaction in a single `nft -f`."""
    return "\n".join([f"table {family} {name}", f"delete table {family} {name}", f"table {family} {name} {{",
                      *("  " + line for line in body), "}", ""])


def _elements(values: list[str]) -> str:
    return "{ " + ", ".join(values) + " }"


def _address(field: str, alt: AddressMatch) -> str | None:
    """The match for one alternative, or None when it can match nothing."""
    if not alt.networks:
        return "" if alt.negate else None
    return f"ip {field} {'!= ' if alt.negate else ''}{_elements(list(alt.networks))}"


def _ports(rule: RuleSpec) -> list[str]:
    if rule.source_ports is None and rule.destination_ports is None:
        return [f"meta l4proto {rule.protocol}"] if rule.protocol != "*" else []
    if rule.protocol in ("icmp", "esp", "ah"):  # no ports: Azure ignores the port fields for these
        return [f"meta l4proto {rule.protocol}"]
    parts = ["meta l4proto " + (rule.protocol if rule.protocol != "*" else "{ tcp, udp }")]
    if rule.source_ports is not None:
        parts.append(f"th sport {_elements(list(rule.source_ports))}")
    if rule.destination_ports is not None:
        parts.append(f"th dport {_elements(list(rule.destination_ports))}")
    return parts


def rule_lines(rule: RuleSpec) -> list[str]:
    """One line per source x destination alternative, all with the rule's verdict."""
    verdict = "return" if rule.allow else "drop"  # return: allowed here, the next NSG still decides
    sources = [_address("saddr", a) for a in rule.sources] if rule.sources is not None else [""]
    dests = [_address("daddr", a) for a in rule.destinations] if rule.destinations is not None else [""]
    lines = []
    for src, dst in itertools.product(sources, dests):
        if src is None or dst is None:
            continue
        match = " ".join(p for p in (src, dst, *_ports(rule)) if p)
        lines.append(f"{match} {verdict}".strip() + f' comment "priority {rule.priority}"')
    return lines


def _group_chains(group: GroupSpec) -> list[str]:
    out = []
    for direction, rules in (("in", group.inbound), ("out", group.outbound)):
        out.append(f"chain {group.chain}_{direction} {{")
        for rule in sorted(rules, key=lambda r: r.priority):
            out.extend("  " + line for line in rule_lines(rule))
        out.append("}")
    return out


def _guard_chains(guard: GuardSpec) -> list[str]:
    inbound = [g for g in (guard.subnet_group, guard.nic_group) if g]  # Azure: subnet NSG first inbound
    outbound = [g for g in (guard.nic_group, guard.subnet_group) if g]  # ... and NIC NSG first outbound
    return [f"chain {guard.chain}_in {{", *(f"  jump {g}_in" for g in inbound), "}",
            f"chain {guard.chain}_out {{", *(f"  jump {g}_out" for g in outbound), "}"]


HASH_KEYS = {"Default": "ip saddr . th sport . ip daddr . th dport",  # Azure's 5-tuple (protocol fixed by the rule)
             "SourceIP": "ip saddr . ip daddr", "SourceIPProtocol": "ip saddr . ip daddr . meta l4proto"}


def _balanced(b: BalancedPort) -> str | None:
    """One DNAT rule spreading a frontend port over its healthy backends by Azure's hash modes;
    with none healthy nothing is translated, so new connections find no way in."""
    if not b.backends:
        return None
    targets = [f"{i} : {ip} . {port}" for i, (ip, port) in enumerate(b.backends)]
    return (f"ip daddr {b.frontend} {b.protocol} dport {b.port} dnat ip to jhash {HASH_KEYS[b.distribution]} "
            f"mod {len(b.backends)} map {_elements(targets)}")


def _outbound(o: OutboundSnat) -> str:
    return (f'oifname "{UPLINK}" ip saddr {o.private} meta l4proto {o.protocol} '
            f"snat ip to {o.transit}:{o.ports[0]}-{o.ports[1]}")


def counted_ports(spec: VNetSpec) -> list[BalancedPort]:
    return [b for b in spec.balanced if b.counter]


def counter_names(spec: VNetSpec) -> set[str]:
    return {f"{b.counter}{suffix}" for b in counted_ports(spec) for suffix in ("_b", "_s")}


def stats_ruleset(spec: VNetSpec, stale: Collection[str] = ()) -> str:
    """The load balancers' counters in the VNet: `<lb>_b` counts the packets and bytes of every flow
    a frontend port translated (both directions), `<lb>_s` the SYNs that reach a frontend port (with
    a backend in rotation or not). Counters are declared (an existing one keeps its value), the
    chains refilled, and the `stale` counters of load balancers gone from the VNet deleted, in one
    transaction."""
    ports = counted_ports(spec)
    if not ports:
        return f"table inet {STATS_TABLE}\ndelete table inet {STATS_TABLE}\n"
    lines = [f"table inet {STATS_TABLE} {{"]
    lines += [f"  counter {name} {{ }}" for name in sorted(counter_names(spec))]
    lines += ["  chain pre { type filter hook prerouting priority -150; policy accept; }",
              "  chain flows { type filter hook forward priority -5; policy accept; }", "}",
              f"flush chain inet {STATS_TABLE} pre", f"flush chain inet {STATS_TABLE} flows"]
    for b in ports:
        if b.protocol == "tcp":
            lines.append(f"add rule inet {STATS_TABLE} pre ip daddr {b.frontend} tcp dport {b.port} "
                         f'tcp flags & (syn|ack) == syn counter name "{b.counter}_s"')
        lines.append(f"add rule inet {STATS_TABLE} flows ct original ip daddr {b.frontend} meta l4proto {b.protocol} "
                     f'ct original proto-dst {b.port} ct status dnat counter name "{b.counter}_b"')
    lines += [f"delete counter inet {STATS_TABLE} {name}" for name in sorted(stale)]
    return "\n".join(lines) + "\n"


def vnet_ruleset(spec: VNetSpec) -> str:
    inet: list[str] = []
    for group in spec.groups:
        inet += _group_chains(group)
    for guard in spec.guards:
        inet += _guard_chains(guard)
    if spec.guards:
        to_nic = [f"{g.address} : jump {g.chain}_in" for g in spec.guards]
        from_nic = [f"{g.address} : jump {g.chain}_out" for g in spec.guards]
        inet += [f"map to_nic {{ type ipv4_addr : verdict; elements = {_elements(to_nic)} }}",
                 f"map from_nic {{ type ipv4_addr : verdict; elements = {_elements(from_nic)} }}"]
    inet += ["chain forward {", "  type filter hook forward priority filter; policy accept;",
             "  ct state established,related accept", "  ct state invalid drop",
             # from the host only what a public IP mapping let in (DNAT), never a private address directly
             f'  iifname "{UPLINK}" ct status ! dnat drop']
    if spec.guards:
        inet += ["  ip saddr vmap @from_nic", "  ip daddr vmap @to_nic"]
    inet += ["}", "chain input {", "  type filter hook input priority filter; policy accept;",
             f'  iifname "{UPLINK}" ct state established,related accept', f'  iifname "{UPLINK}" drop', "}"]
    if spec.guards:  # health probes start in the VNet's router (from 168.63.129.16): NSGs judge them too
        inet += ["chain output {", "  type filter hook output priority filter; policy accept;",
                 "  ct state established,related accept", "  ip daddr vmap @to_nic", "}"]
    nat_pre = ["chain prerouting {", "  type nat hook prerouting priority dstnat; policy accept;"]
    nat_post = ["chain postrouting {", "  type nat hook postrouting priority srcnat; policy accept;"]
    nat_pre += ["  " + line for line in (_balanced(b) for b in spec.balanced) if line]
    # outbound rules before the 1:1 mappings: the controller lists only members without a public IP
    nat_post += ["  " + _outbound(o) for o in spec.outbound]
    one_to_one = [m for m in spec.public if m.private is not None]
    if one_to_one:
        dnat = [f"{m.transit} : {m.private}" for m in one_to_one]
        snat = [f"{m.private} : {m.transit}" for m in one_to_one]
        nat_pre.append(f'  iifname "{UPLINK}" dnat ip to ip daddr map {_elements(dnat)}')
        nat_post.append(f'  oifname "{UPLINK}" snat ip to ip saddr map {_elements(snat)}')
    nat_post.append(f'  oifname "{UPLINK}" masquerade')
    inet += [*nat_pre, "}", *nat_post, "}"]
    # Layer 2: an endpoint may only speak with its own MAC and IP (DHCP discovery aside).
    bridge = ["chain prerouting {", "  type filter hook prerouting priority filter; policy accept;"]
    for e in spec.endpoints:
        bridge.append(f'  iifname "{e.port}" ether saddr != {e.mac} drop')
        bridge.append(f'  iifname "{e.port}" ether type ip ip saddr != {{ {e.address.ip}, 0.0.0.0 }} drop')
        bridge.append(f'  iifname "{e.port}" ether type arp arp saddr ip != {e.address.ip} drop')
    bridge.append("}")
    return replace_table("inet", VNET_TABLE, inet) + replace_table("bridge", VNET_TABLE, bridge)


def host_ruleset(spec: HostSpec) -> str:
    """kumo's table in the host namespace: public IP DNAT (from the host and from other VNets), the
    source NAT that lets loopback clients reach them, and the wall between instances and the host."""
    mappings = [m for v in spec.vnets for m in v.public]
    links = f'"{spec.link_prefix}*"'
    body = []
    sources = mappings  # NICs send from their public IP, and pool members from an outbound rule's frontend
    if mappings:
        body.append(f"map public_to_transit {{ type ipv4_addr : ipv4_addr; elements = "
                    f"{_elements([f'{m.public} : {m.transit}' for m in mappings])} }}")
    if sources:
        body.append(f"map transit_to_public {{ type ipv4_addr : ipv4_addr; elements = "
                    f"{_elements([f'{m.transit} : {m.public}' for m in sources])} }}")
    body += ["chain output {", "  type nat hook output priority -100; policy accept;"]
    if mappings:
        body.append("  dnat to ip daddr map @public_to_transit")
    body += ["}", "chain prerouting {", "  type nat hook prerouting priority dstnat; policy accept;"]
    if mappings:
        body.append(f"  iifname {links} dnat to ip daddr map @public_to_transit")
    body += ["}", "chain postrouting {", "  type nat hook postrouting priority srcnat; policy accept;"]
    if sources:  # an instance with a public IP reaches others from that address
        body.append(f"  oifname {links} iifname {links} snat to ip saddr map @transit_to_public")
    body += [f"  oifname {links} ip saddr 127.0.0.0/8 masquerade", "}",
             "chain input {", "  type filter hook input priority filter; policy accept;",
             f"  iifname {links} ct state established,related accept",
             f"  iifname {links} drop", "}",  # instances never reach the host's ports (kumo's API included)
             "chain forward {", "  type filter hook forward priority filter; policy accept;",
             f"  iifname {links} oifname {links} ct status dnat accept",
             f"  iifname {links} oifname {links} ct state established,related accept",
             f"  iifname {links} drop", f"  oifname {links} ct state established,related accept",
             f"  oifname {links} ct status dnat accept", f"  oifname {links} drop", "}"]
    return replace_table("ip", spec.table, body)
