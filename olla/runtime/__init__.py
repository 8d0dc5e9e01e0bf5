"""olla.runtime."""
