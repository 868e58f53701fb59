"""Client agent for a self-hosted Claude Code usage server."""

__version__ = "0.1.0"
