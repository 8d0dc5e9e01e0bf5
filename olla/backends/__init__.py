"""olla.backends."""
