"""The `kumo` command."""
