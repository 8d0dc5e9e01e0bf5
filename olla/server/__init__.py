"""HTTP server: aiohttp routes for /api/* (Ollama) and errors."""
