"""kumo: Azure's compute services, for real, on your own Linux machine."""

__version__ = "0.1.0"
