"""Host drivers: the only code that changes the host (namespaces, links, nftables, processes)."""
