"""olla.registry."""
