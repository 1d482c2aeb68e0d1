"""Microsoft.Resources: subscriptions, tenants, locations, providers, resource groups, generic
resource listing and template specs."""
