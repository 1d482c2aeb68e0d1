"""Controllers: turn desired state in the store into host state through the drivers."""
