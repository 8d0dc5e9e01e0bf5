"""TEMPORARY stand-in until the thinking-parsers branch lands (replaced by it)."""
