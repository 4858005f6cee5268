"""liveavatar: a self-hosted streaming-avatar server speaking the AKool Streaming Avatar API."""

__version__ = "0.1.0"
