"""The front door: Azure Resource Manager's REST API over HTTPS."""
