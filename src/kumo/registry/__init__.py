"""kumo's container registries: an OCI distribution v2 data plane with ACR's auth and metadata API.
`service.RegistryService` is the entry point (see its docstring for how other code reaches a registry)."""
