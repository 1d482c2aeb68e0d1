"""Microsoft.Network: virtual networks, subnets, NICs, public IPs, network security groups."""
