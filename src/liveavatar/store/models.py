"""Database tables (SQLAlchemy 2 typed ORM). Times are epoch milliseconds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ApiKey(Base):
    """An operator-issued API key; only its SHA-256 hash is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRow(Base):
    """One streaming session and its history."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    avatar_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(SmallInteger, index=True)
    stream_type: Mapped[str] = mapped_column(String(16))
    mode_type: Mapped[int] = mapped_column(SmallInteger)
    duration: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    create_time: Mapped[int] = mapped_column(BigInteger, index=True)
    update_time: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    end_time: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expire_time: Mapped[int] = mapped_column(BigInteger)
    close_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    node_id: Mapped[str | None] = mapped_column(String(100), default=None, index=True)
    """The API process (node) that placed the session; its sessions fail when it is gone."""
    host_id: Mapped[str | None] = mapped_column(String(120), default=None)
    """The session host (in-process, worker or Ray actor) that runs the session."""


class KnowledgeBase(Base):
    """A knowledge base: instructions, prologue and the documents a dialogue session answers from."""

    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_knowledge_owner_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prologue: Mapped[str] = mapped_column(Text, default="")
    prompt: Mapped[str] = mapped_column(Text, default="")
    docs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    urls: Mapped[list[str]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped with every change of the sources (docs, urls, uploads); an index records the one it was built from."""
    create_time: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[int] = mapped_column(BigInteger)


class NodeRow(Base):
    """An API process serving sessions against this database, and when it was last seen alive."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[int] = mapped_column(BigInteger, index=True)


class AvatarRow(Base):
    """A custom avatar built from a photo or video: its owner, its build status and what went wrong."""

    __tablename__ = "avatars"
    __table_args__ = (UniqueConstraint("owner_id", "avatar_id", name="uq_avatar_owner_avatar_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True, default=None)
    """The API key that created it; None for avatars the operator built with the CLI (visible to every key)."""
    avatar_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    gender: Mapped[str] = mapped_column(String(16), default="")
    voice_id: Mapped[str] = mapped_column(String(100), default="")
    source: Mapped[str] = mapped_column(Text)
    """The URL it was made from, or `upload:<file name>` for an uploaded file."""
    url_from: Mapped[int] = mapped_column(SmallInteger, default=1)
    framing: Mapped[str] = mapped_column(String(16), default="presenter")
    """"presenter" (zoomed to head and shoulders) or "original" (the photo's own framing)."""
    status: Mapped[int] = mapped_column(SmallInteger, index=True)
    msg: Mapped[str] = mapped_column(Text, default="")
    stage: Mapped[str] = mapped_column(String(100), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    create_time: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[int] = mapped_column(BigInteger)
