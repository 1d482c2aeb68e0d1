"""Virtual machines on this host: see controller.py."""
