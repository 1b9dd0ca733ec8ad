"""Configuration, client factories, the bundled broker, wiring and entry points (HTTP server, CLI)."""
