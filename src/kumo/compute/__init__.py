"""Virtual machines: the catalogue of Azure VM sizes and the marketplace images kumo really has."""
