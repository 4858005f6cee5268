"""Persistence: SQLAlchemy 2 async over SQLite (default) or PostgreSQL."""

from liveavatar.store.db import Store

__all__ = ["Store"]
