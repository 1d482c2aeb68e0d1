"""The network driver: VNets as network namespaces with bridges, nftables for NSGs and NAT."""
