"""Microsoft.ContainerInstance: container groups."""
