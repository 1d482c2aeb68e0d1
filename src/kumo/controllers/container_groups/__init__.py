"""Container groups on the host: see controller.py."""
