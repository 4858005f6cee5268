"""One exception tree: every error the API can answer with knows its response code."""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    """Response codes of the public API (spec/api.md)."""

    OK = 1000
    PARAM_ERROR = 1003
    RATE_LIMITED = 1005
    QUOTA = 1006
    NOT_FOUND = 1008
    NO_PERMISSION = 1009
    AUTH_INVALID = 1101
    AUTH_MISSING = 1102
    ACCOUNT_BANNED = 1200
    AUDIO_ERROR = 1201
    BUSY = 1215
    SESSION_NOT_FOUND = 1216
    PROCESSING_ERROR = 1218
    SESSION_CLOSED = 1219
    ALREADY_EXISTS = 1222
    KNOWLEDGE_NOT_FOUND = 1232
    KNOWLEDGE_EXISTS = 1233
    KNOWLEDGE_CREATE_ERROR = 1234
    KNOWLEDGE_UPDATE_ERROR = 1235
    KNOWLEDGE_DETAIL_ERROR = 1236


class LiveAvatarError(Exception):
    """Base of every error that maps to an API response code."""

    code: Code = Code.PROCESSING_ERROR
    default_msg = "liveAvatar processing error"

    def __init__(self, msg: str | None = None) -> None:
        self.msg = msg or self.default_msg
        super().__init__(self.msg)


class ParamError(LiveAvatarError):
    code = Code.PARAM_ERROR
    default_msg = "parameter error"


class TooLarge(ParamError):
    """A document or body over a byte limit; `limit` is the limit it broke."""

    default_msg = "too large"

    def __init__(self, msg: str | None = None, *, limit: int) -> None:
        super().__init__(msg)
        self.limit = limit


class RateLimited(LiveAvatarError):
    code = Code.RATE_LIMITED
    default_msg = "frequent operation, please try again later"


class NotFound(LiveAvatarError):
    code = Code.NOT_FOUND
    default_msg = "content does not exist"


class NoPermission(LiveAvatarError):
    code = Code.NO_PERMISSION
    default_msg = "no permission"


class AuthInvalid(LiveAvatarError):
    code = Code.AUTH_INVALID
    default_msg = "invalid authorization or token expired"


class AuthMissing(LiveAvatarError):
    code = Code.AUTH_MISSING
    default_msg = "authorization cannot be empty"


class AccountBanned(LiveAvatarError):
    code = Code.ACCOUNT_BANNED
    default_msg = "account has been disabled"


class QuotaExceeded(LiveAvatarError):
    code = Code.QUOTA
    default_msg = "insufficient quota"


class Busy(LiveAvatarError):
    code = Code.BUSY
    default_msg = "liveAvatar processing is busy, no capacity for a new session"


class SessionClosed(LiveAvatarError):
    code = Code.SESSION_CLOSED
    default_msg = "liveAvatar session is closed"


class AlreadyExists(LiveAvatarError):
    code = Code.ALREADY_EXISTS
    default_msg = "resource already exists"


class KnowledgeExists(LiveAvatarError):
    code = Code.KNOWLEDGE_EXISTS
    default_msg = "knowledge already exists"


class ProcessingError(LiveAvatarError):
    code = Code.PROCESSING_ERROR
