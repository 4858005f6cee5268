"""Settings: flags and `LIVEAVATAR_*` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from liveavatar.llm import LLMSettings


def default_data_dir() -> Path:
    """The per-user folder that holds everything the server writes."""
    return Path(platformdirs.user_data_dir("liveavatar", appauthor=False))


def user_cache_dir(name: str) -> Path:
    """A per-user cache folder, shared by every data dir, for models made once per machine (`name` inside it)."""
    return Path(platformdirs.user_cache_dir("liveavatar", appauthor=False)) / name


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    """Everything an operator can configure."""

    model_config = SettingsConfigDict(env_prefix="LIVEAVATAR_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str | None = None
    """Base URL clients reach the server at; defaults to the URL of each request."""
    database_url: str | None = None
    """SQLAlchemy URL; SQLite file in the data dir when unset. `postgresql://` works as is."""
    log_level: str = "info"
    pack_dir: Path | None = None
    video_size: Annotated[tuple[int, int], NoDecode] = (512, 512)
    """The avatar video's width x height, e.g. `720x720` or `1280x720` (CPU cost grows with the pixels)."""
    """Where built avatar packs are cached; `<data_dir>/avatars/packs` when unset."""

    max_sessions: int = Field(8, ge=1)
    """Live sessions (queueing or processing) this server holds at once, over all its hosts; more get 1215."""
    max_sessions_per_key: int = Field(0, ge=0)
    """Live sessions one API key may hold at once (0: no limit but `max_sessions`); more get 1006."""
    workers: int | None = Field(None, ge=0)
    """Worker processes holding sessions; 0: sessions run inside the API process; unset: one per usable core."""
    ray_address: str | None = None
    """Ray cluster to place session hosts on (`auto`, or `HOST:PORT` of the head); overrides `workers`."""
    ray_hosts: int = Field(0, ge=0)
    """Session hosts (Ray actors) to keep on the cluster; 0: one per alive node when the server starts."""
    ray_host_cpus: float = Field(1.0, ge=0)
    """CPUs each Ray session host books (a booking only: Ray does not pin or limit the actor's use)."""
    node_id: str | None = None
    """This API process's name in the database (sessions record it); `<hostname>:<port>` when unset."""
    default_session_duration: int = Field(600, ge=1, le=3600)
    join_token_ttl: int = Field(300, ge=10)
    rejoin_grace: float = Field(20.0, ge=0)
    """Seconds a session waits for its client to rejoin after the connection dropped."""
    api_token_ttl_days: int = Field(365, ge=1)
    rate_limit_per_minute: int = Field(600, ge=1)
    rate_limit_burst: int = Field(60, ge=1)
    max_body_bytes: int = Field(1 << 20, ge=1024)

    ice_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host addresses the WebRTC peer advertises; all local addresses when empty."""
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    """RTCIceServer objects (STUN/TURN) given to both peers; none by default."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    """Browser origins allowed to call the API cross-origin (comma-separated; `*`: any). Never with credentials."""
    allow_private_urls: bool = False
    """Let server-side fetches (backgrounds, knowledge documents) reach private/loopback addresses."""

    piper_int8: bool = True
    """Piper speaks with an int8 copy of its voice (~1.6x less CPU, same words and timings; built once per
    machine into the user cache, ~30 s, by setup or in the background, the float model speaking meanwhile or
    if the build fails); false: the packaged float model."""

    piper_threads: int | None = Field(None, ge=1)
    """onnxruntime threads per Piper model; None: 2 where a session host has two cores or more to itself, else
    1 (e.g. a worker per core): the second thread brings a reply's first clause ~15 ms sooner but costs ~13%
    more CPU, and on a core another host needs it only competes (bench/client_render.py)."""

    knowledge_embeddings: bool = True
    """Hybrid retrieval (BM25 + the packaged MiniLM embeddings); false: BM25 only, much faster ingestion."""

    llm_backend: str = "local"
    """Dialogue mode's LLM: `local` (llama.cpp with the packaged SmolLM2) or `openai` (any compatible server)."""
    llm_model_path: Path | None = None
    """GGUF file for the local backend; the packaged SmolLM2-135M-Instruct when unset."""
    llm_base_url: str = "http://127.0.0.1:8000/v1"
    llm_model: str = ""
    llm_api_key: SecretStr | None = None
    llm_timeout: float = Field(60.0, gt=0)
    llm_first_token_timeout: float = Field(15.0, gt=0)
    llm_retries: int = Field(1, ge=0, le=5)
    llm_max_tokens: int = Field(200, ge=16, le=4096)
    llm_temperature: float = Field(0.7, ge=0, le=2)
    llm_context_tokens: int = Field(2048, ge=512)
    llm_supports_images: bool = False
    llm_threads: int = Field(0, ge=0, le=64)
    """Threads of the local model; 0: half the usable cores, at most 4 (the rest stay with TTS and media)."""
    llm_local_model: str = "smollm2-135m"
    """Which installed packaged model the `local` backend runs (liveavatar.llm.PACKAGED_MODELS)."""
    llm_state_cache_mb: int = Field(256, ge=0)
    """Saved conversation states of the local model, so a session's next turn doesn't re-read its history."""

    @field_validator("video_size", mode="before")
    @classmethod
    def _parse_size(cls, value: object) -> object:
        if isinstance(value, str):
            width, sep, height = value.lower().replace(" ", "").partition("x")
            if not sep or not width.isdigit() or not height.isdigit():
                raise ValueError("video_size must look like 512x512 or 1280x720")
            value = (int(width), int(height))
        return value

    @field_validator("video_size")
    @classmethod
    def _check_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(128 <= side <= 1920 and side % 2 == 0 for side in value):
            raise ValueError("video_size: each side must be an even number from 128 to 1920")
        return value

    @field_validator("ice_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def llm_settings(self) -> LLMSettings:
        """The LLM configuration in the form the LLM registry takes."""
        from liveavatar.llm import LLMSettings

        return LLMSettings(
            backend=self.llm_backend,
            model_path=self.llm_model_path,
            base_url=self.llm_base_url,
            model=self.llm_model,
            api_key=self.llm_api_key.get_secret_value() if self.llm_api_key else None,
            timeout=self.llm_timeout,
            first_token_timeout=self.llm_first_token_timeout,
            retries=self.llm_retries,
            max_tokens=self.llm_max_tokens,
            temperature=self.llm_temperature,
            supports_images=self.llm_supports_images,
            context_tokens=self.llm_context_tokens,
            threads=self.llm_threads,
            local_model=self.llm_local_model,
            state_cache_mb=self.llm_state_cache_mb,
        )

    @property
    def resolved_workers(self) -> int:
        """Worker processes to run: as set, else one per core this process may use."""
        if self.workers is not None:
            return self.workers
        return usable_cores()

    @property
    def host_cores(self) -> int:
        """Cores each session host has to itself: a Ray actor's CPUs, or this machine's shared by the workers."""
        if self.ray_address is not None:
            return max(1, int(self.ray_host_cpus))
        return max(1, usable_cores() // max(1, self.resolved_workers))

    @property
    def resolved_piper_threads(self) -> int:
        """Piper's onnxruntime threads: as set, else the cores each session host has to itself, 1 or 2."""
        if self.piper_threads is not None:
            return self.piper_threads
        return min(2, self.host_cores)

    @property
    def resolved_node_id(self) -> str:
        """This API process's node id: as set, else host name and port (stable across restarts)."""
        return self.node_id or f"{socket.gethostname()}:{self.port}"

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL to connect to."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'liveavatar.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url
