"""CLI commands beyond the core ones, one module per area; importing a module registers it."""
