"""olla.engine."""
