"""olla: a local LLM daemon with a CLI, in the spirit of Ollama."""

__version__ = "0.1.0"
