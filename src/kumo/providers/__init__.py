"""Resource providers: one module per resource type, each with the same parts in the same order."""
