"""Request bodies: strict types, spec limits, blanks read as "not given", unknown fields ignored."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from liveavatar.protocol.limits import (
    MAX_PRON_ENTRIES,
    MAX_PRON_WORD,
    first_surrogate_path,
    pron_map_problem,
    url_problem,
)

MB = 1024 * 1024
KNOWLEDGE_FORMATS = frozenset({"pdf", "doc", "docx", "txt", "md", "json", "xml", "csv"})


def _http_url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(f"URL {problem}")
    return value


def _pron_map(value: dict[str, str]) -> dict[str, str]:
    problem = pron_map_problem(value)
    if problem is not None:
        raise ValueError(f"pron_map {problem}")
    return value


HttpUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Body(BaseModel):
    """Base of request bodies: strict JSON types, extra fields ignored, "" and null mean absent."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_blanks(cls, value: Any) -> Any:
        # JSON's \ud800 escape gives a lone surrogate: not text, and no answer containing it can be encoded.
        where = first_surrogate_path(value)
        if where is not None:
            raise ValueError(f"{where} is not valid Unicode (lone surrogate)")
        if isinstance(value, dict):
            return {key: item for key, item in value.items() if item is not None and item != ""}
        return value


class TurnDetection(Body):
    """When the user has finished speaking."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)


class VoiceParams(Body):
    """How the avatar speaks and listens."""

    speed: float = Field(1.0, ge=0.8, le=1.2)
    pron_map: Annotated[
        dict[Annotated[str, StringConstraints(min_length=1, max_length=MAX_PRON_WORD)], str],
        Field(max_length=MAX_PRON_ENTRIES),
        AfterValidator(_pron_map),
    ] = Field(default_factory=dict)
    stt_language: str | None = Field(None, max_length=16)
    stt_type: str | None = Field(None, max_length=32)
    turn_detection: TurnDetection | None = None


class SessionCreate(Body):
    """POST /v4/liveAvatar/session/create."""

    avatar_id: Id
    duration: int | None = Field(None, ge=1, le=3600)
    knowledge_id: Id | None = None
    voice_id: Id | None = None
    voice_url: HttpUrl | None = None
    language: str | None = Field(None, max_length=16)
    mode_type: Literal[1, 2] = 1
    background_url: HttpUrl | None = None
    voice_params: VoiceParams = Field(default_factory=VoiceParams)
    stream_type: Literal["agora", "livekit", "trtc", "webrtc"] = "agora"
    """Which client joins: a provider's name gets that provider's credential fields (for liveavatar's
    compatibility clients) and data-channel limits; "webrtc" is liveavatar's own client."""
    credentials: dict[str, Any] | None = None
    transport_profile: Literal["webrtc", "livekit", "agora", "trtc"] | None = None
    """liveavatar extension: data-channel limits to keep to (a provider's), for clients written for one."""
    render: Literal["server", "client"] = "server"
    """liveavatar extension: "server" sends the avatar as video; "client" sends audio and the animation stream
    (data channel `liveavatar-animation`, docs/animation-stream.md) and no video: the client draws the face."""


class Offer(Body):
    """POST {webrtc_url}: the client's complete (non-trickle) SDP offer."""

    sdp: Annotated[str, StringConstraints(min_length=1, max_length=64 * 1024)]
    type: Literal["offer"]


class SessionRef(Body):
    """POST /v4/liveAvatar/session/close: `id`, or `session_id` as some public samples send."""

    id: Id | None = None
    session_id: Id | None = None

    @model_validator(mode="after")
    def _one_id(self) -> SessionRef:
        if self.id is None and self.session_id is None:
            raise ValueError("id cannot be empty")
        return self

    @property
    def target(self) -> str:
        """The session id given."""
        return self.id or self.session_id or ""


class TokenRequest(Body):
    """POST /v3/getToken."""

    clientId: str | None = Field(None, max_length=200)  # noqa: N815 - the API's spelling
    clientSecret: Annotated[str, StringConstraints(min_length=1, max_length=200)]  # noqa: N815


def _doc_format(name: str, url: str) -> str | None:
    for candidate in (name, urlsplit(url).path):
        suffix = PurePosixPath(candidate).suffix.lower().lstrip(".")
        if suffix in KNOWLEDGE_FORMATS:
            return suffix
    return None


class KnowledgeDoc(Body):
    """A document of a knowledge base, fetched from `url` at ingestion."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    url: HttpUrl
    size: int = Field(0, ge=0, le=100 * MB)

    @model_validator(mode="after")
    def _known_format(self) -> KnowledgeDoc:
        if _doc_format(self.name, self.url) is None:
            allowed = ", ".join(sorted(KNOWLEDGE_FORMATS))
            raise ValueError(f"unsupported document format for {self.name!r} (allowed: {allowed})")
        return self


Docs = Annotated[list[KnowledgeDoc], Field(max_length=100)]
Urls = Annotated[list[HttpUrl], Field(max_length=100)]


def _total_size(docs: list[KnowledgeDoc] | None) -> None:
    if docs and sum(doc.size for doc in docs) > 500 * MB:
        raise ValueError("docs: total size exceeds 500 MB per knowledge base")


class KnowledgeFields(Body):
    """The fields of a knowledge base that a client sets."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None
    prologue: str | None = Field(None, max_length=2000)
    prompt: str | None = Field(None, max_length=10_000)
    docs: Docs | None = None
    urls: Urls | None = None

    @model_validator(mode="after")
    def _limits(self) -> KnowledgeFields:
        _total_size(self.docs)
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given, as stored."""
        values = self.model_dump(exclude_unset=True, include={"name", "prologue", "prompt", "urls"})
        if "docs" in self.model_fields_set and self.docs is not None:
            values["docs"] = [doc.model_dump() for doc in self.docs]
        return values


class KnowledgeCreate(KnowledgeFields):
    """POST /v4/knowledge/create."""

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class KnowledgeUpdate(KnowledgeFields):
    """POST /v4/knowledge/update."""

    id: Id


class KnowledgeRef(Body):
    """DELETE /v4/knowledge/delete."""

    id: Id
