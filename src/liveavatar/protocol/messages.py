"""Stream messages v2: parse and validate what clients send, build what the avatar sends back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeAlias, TypeVar, get_args

from liveavatar.errors import Code, LiveAvatarError
from liveavatar.protocol.limits import (
    MAX_CMD,
    MAX_EVENT,
    MAX_ID,
    MAX_IDX,
    MAX_INBOUND_BYTES,
    MAX_LANGUAGE,
    MAX_MID,
    MAX_STT_TYPE,
    MAX_URL,
    pron_map_problem,
    text_problem,
    url_problem,
)

VERSION: Final = 2

MessageType = Literal["chat", "command", "event"]
Sender = Literal["bot", "user"]
Action = Literal["hand_wave", "cheer", "thumbs_up", "pump_fists", "nod", "shake", "waft_left", "waft_right"]
Expression = Literal["angry", "disgust", "fear", "happiness", "sadness", "surprise", "contempt"]
VadType = Literal["server_vad", "semantic_vad"]

ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
EXPRESSIONS: Final[tuple[Expression, ...]] = get_args(Expression)
VAD_TYPES: Final[tuple[VadType, ...]] = get_args(VadType)

AUDIO_START: Final = "audio_start"
AUDIO_END: Final = "audio_end"

SPEED_MIN: Final = 0.8
SPEED_MAX: Final = 1.2
MAX_MS: Final = 3_600_000
"""Upper bound for turn-detection durations: a session lasts at most an hour."""

Message: TypeAlias = dict[str, Any]
"""An outbound message, ready for `encode()`."""


class ProtocolError(LiveAvatarError):
    """A stream message that cannot be accepted; `msg` says why, `as_ack()` builds the reply."""

    def __init__(
        self,
        msg: str,
        *,
        code: Code = Code.PARAM_ERROR,
        msg_type: str | None = None,
        mid: str | None = None,
        cmd: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg_type = msg_type
        """The message's `type` when it could be read."""
        self.mid = mid
        """The message's `mid` when it could be read."""
        self.cmd = cmd
        """The command's `cmd` when it could be read."""

    def as_ack(self) -> Message | None:
        """The failure ack when the message was a command (cmd "" if unreadable); None for any other."""
        if self.msg_type != "command":
            return None
        return ack(self.mid, self.cmd or "", self.code, self.msg)


# --- inbound -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatChunk:
    """One piece of a client's chat message; pieces share `mid`, `idx` counts from 0, `fin` marks the last."""

    mid: str
    idx: int
    fin: bool
    text: str


@dataclass(frozen=True)
class Interrupt:
    """Command: stop the current reply now."""

    cmd: ClassVar[Literal["interrupt"]] = "interrupt"
    mid: str | None


@dataclass(frozen=True)
class TurnDetection:
    """Turn-detection settings; None means "not given, keep the current value"."""

    type: VadType | None = None
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None


@dataclass(frozen=True)
class SetParams:
    """Command: change session settings; every None field was not given and keeps its current value."""

    cmd: ClassVar[Literal["set-params"]] = "set-params"
    mid: str | None
    lang: str | None = None
    mode: Literal[1, 2] | None = None
    bgurl: str | None = None
    voice_id: str | None = None
    voice_url: str | None = None
    speed: float | None = None
    stt_language: str | None = None
    pron_map: Mapping[str, str] | None = field(default=None, hash=False)
    stt_type: str | None = None
    turn_detection: TurnDetection | None = None


@dataclass(frozen=True)
class SetAction:
    """Command: play a gesture and/or show a facial expression (at least one is set)."""

    cmd: ClassVar[Literal["set-action"]] = "set-action"
    mid: str | None
    action: Action | None = None
    expression: Expression | None = None


@dataclass(frozen=True)
class Event:
    """An event message (the server sends these; parsed for completeness and for clients)."""

    name: str


Command: TypeAlias = Interrupt | SetParams | SetAction
Inbound: TypeAlias = ChatChunk | Interrupt | SetParams | SetAction | Event


class _Invalid(Exception):
    """A validation failure deep inside a message; `parse` adds the message's context."""


def _show(value: object, limit: int = 40) -> str:
    """A short JSON rendering of a client's value for an error reason (never echo megabytes back)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_empty(value: object) -> bool:
    """Empty values mean "not given" (the official demo sends "" for unset fields)."""
    return value is None or value == "" or (isinstance(value, dict) and not value)


def _opt_str(data: Mapping[str, object], key: str, path: str, max_chars: int) -> str | None:
    value = data.get(key)
    if _is_empty(value):
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{path} must be a string, got {_show(value)}")
    problem = text_problem(value, max_chars)
    if problem is not None:
        raise _Invalid(f"{path} {problem}")
    return value


def _opt_url(data: Mapping[str, object], key: str, path: str) -> str | None:
    value = _opt_str(data, key, path, MAX_URL)
    problem = None if value is None else url_problem(value)
    if problem is not None:
        raise _Invalid(f"{path} {problem}")
    return value


def _opt_object(data: Mapping[str, object], key: str, path: str) -> dict[str, object] | None:
    value = data.get(key)
    if _is_empty(value):
        return None
    if not isinstance(value, dict):
        raise _Invalid(f"{path} must be an object, got {_show(value)}")
    return value


def _opt_number(data: Mapping[str, object], key: str, path: str, lo: float, hi: float) -> float | None:
    value = data.get(key)
    if _is_empty(value):
        return None
    # The range test also refuses NaN and infinities (and huge ints, without converting them).
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _Invalid(f"{path} must be a number from {lo} to {hi}, got {_show(value)}")
    return float(value)


def _opt_ms(data: Mapping[str, object], key: str, path: str) -> int | None:
    value = data.get(key)
    if _is_empty(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MS:
        raise _Invalid(f"{path} must be an integer from 0 to {MAX_MS} (ms), got {_show(value)}")
    return value


_C = TypeVar("_C", bound=str)


def _opt_choice(data: Mapping[str, object], key: str, path: str, choices: tuple[_C, ...]) -> _C | None:
    value = data.get(key)
    if _is_empty(value):
        return None
    for choice in choices:
        if value == choice:
            return choice
    raise _Invalid(f"{path} must be one of {', '.join(choices)}; got {_show(value)}")


def _turn_detection(data: Mapping[str, object], path: str) -> TurnDetection | None:
    td = _opt_object(data, "turn_detection", path)
    if td is None:
        return None
    result = TurnDetection(
        type=_opt_choice(td, "type", f"{path}.type", VAD_TYPES),
        threshold=_opt_number(td, "threshold", f"{path}.threshold", 0.0, 1.0),
        prefix_padding_ms=_opt_ms(td, "prefix_padding_ms", f"{path}.prefix_padding_ms"),
        silence_duration_ms=_opt_ms(td, "silence_duration_ms", f"{path}.silence_duration_ms"),
    )
    return None if result == TurnDetection() else result


def _pron_map(data: Mapping[str, object], path: str) -> Mapping[str, str] | None:
    pm = _opt_object(data, "pron_map", path)
    if pm is None:
        return None
    for word, spoken in pm.items():
        if not isinstance(spoken, str):
            raise _Invalid(f"{path}[{_show(word)}] must be a string, got {_show(spoken)}")
    problem = pron_map_problem(pm)
    if problem is not None:
        raise _Invalid(f"{path} {problem}")
    return MappingProxyType({word: str(spoken) for word, spoken in pm.items()})


def _set_params(mid: str | None, data: Mapping[str, object]) -> SetParams:
    mode = data.get("mode")
    if not _is_empty(mode) and (isinstance(mode, bool) or mode not in (1, 2)):
        raise _Invalid(f"data.mode must be 1 (retelling) or 2 (dialogue), got {_show(mode)}")
    vp = _opt_object(data, "vparams", "data.vparams") or {}
    # Deprecated top-level vid/vurl still work; vparams wins when both are given.
    voice_id = _opt_str(vp, "vid", "data.vparams.vid", MAX_ID)
    legacy_voice_id = _opt_str(data, "vid", "data.vid", MAX_ID)
    voice_url = _opt_url(vp, "vurl", "data.vparams.vurl")
    legacy_voice_url = _opt_url(data, "vurl", "data.vurl")
    return SetParams(
        mid=mid,
        lang=_opt_str(data, "lang", "data.lang", MAX_LANGUAGE),
        mode=2 if mode == 2 else 1 if mode == 1 else None,
        bgurl=_opt_url(data, "bgurl", "data.bgurl"),
        voice_id=voice_id if voice_id is not None else legacy_voice_id,
        voice_url=voice_url if voice_url is not None else legacy_voice_url,
        speed=_opt_number(vp, "speed", "data.vparams.speed", SPEED_MIN, SPEED_MAX),
        stt_language=_opt_str(vp, "stt_language", "data.vparams.stt_language", MAX_LANGUAGE),
        pron_map=_pron_map(vp, "data.vparams.pron_map"),
        stt_type=_opt_str(vp, "stt_type", "data.vparams.stt_type", MAX_STT_TYPE),
        turn_detection=_turn_detection(vp, "data.vparams.turn_detection"),
    )


def _set_action(mid: str | None, data: Mapping[str, object]) -> SetAction:
    action = _opt_choice(data, "action", "data.action", ACTIONS)
    expression = _opt_choice(data, "expression", "data.expression", EXPRESSIONS)
    if action is None and expression is None:
        raise _Invalid("set-action needs data.action or data.expression")
    return SetAction(mid=mid, action=action, expression=expression)


_TYPES: Final = get_args(MessageType)
_COMMANDS: Final = ("interrupt", "set-params", "set-action")


def _command(mid: str | None, cmd: str, pld: Mapping[str, object]) -> Command:
    if cmd not in _COMMANDS:
        raise _Invalid(f"unknown cmd {_show(cmd)} (expected {', '.join(_COMMANDS)})")
    if cmd == "interrupt":  # carries no data; whatever is there is ignored
        return Interrupt(mid=mid)
    data = _opt_object(pld, "data", "pld.data") or {}
    return _set_params(mid, data) if cmd == "set-params" else _set_action(mid, data)


def _chat(mid: str, msg: Mapping[str, object], pld: Mapping[str, object]) -> ChatChunk:
    idx = msg.get("idx")
    if idx is None:
        raise _Invalid("idx is missing")
    if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
        raise _Invalid(f"idx must be an integer >= 0, got {_show(idx)}")
    if idx > MAX_IDX:
        raise _Invalid(f"idx must be at most {MAX_IDX}, got {_show(idx)}")
    fin = msg.get("fin")
    if fin is None:
        raise _Invalid("fin is missing")
    if not isinstance(fin, bool):
        raise _Invalid(f"fin must be true or false, got {_show(fin)}")
    text = pld.get("text")
    if text is None:
        raise _Invalid("pld.text is missing")
    if not isinstance(text, str):
        raise _Invalid(f"pld.text must be a string, got {_show(text)}")
    # A lone surrogate may be half of a pair that a UTF-16 client split across chunks: reassembly
    # pairs them up and repairs what stays lone, so chat text is the one place they pass.
    return ChatChunk(mid=mid, idx=idx, fin=fin, text=text)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _decode(raw: str | bytes) -> object:
    if len(raw) > MAX_INBOUND_BYTES:
        raise ProtocolError(f"message is larger than {MAX_INBOUND_BYTES} bytes")
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not valid UTF-8") from None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ProtocolError(f"message is not valid JSON ({reason})") from None


def parse(raw: str | bytes) -> Inbound | None:
    """Parse one data-channel message; None for messages that are not v2, ProtocolError if invalid."""
    msg = _decode(raw)
    if not isinstance(msg, dict):
        raise ProtocolError(f"message must be a JSON object, got {_show(msg)}")
    version = msg.get("v")
    if isinstance(version, bool) or version != VERSION:
        return None
    msg_type = msg.get("type")
    if msg_type is None:
        raise ProtocolError("type is missing")
    if not isinstance(msg_type, str) or msg_type not in _TYPES:
        raise ProtocolError(f"unknown type {_show(msg_type)} (expected chat, command or event)")
    # Read mid and cmd first, so that any later error can name them in its ack; an ack echoes them
    # only when they are valid and short (an oversized echo could not be sent at all).
    raw_mid = msg.get("mid")
    mid_problem = text_problem(raw_mid, MAX_MID, controls=False) if isinstance(raw_mid, str) else None
    mid = raw_mid if isinstance(raw_mid, str) and mid_problem is None else None
    pld = msg.get("pld")
    raw_cmd = pld.get("cmd") if isinstance(pld, dict) else None
    cmd = raw_cmd if isinstance(raw_cmd, str) and text_problem(raw_cmd, MAX_CMD, controls=False) is None else None
    try:
        if mid_problem is not None:
            raise _Invalid(f"mid {mid_problem}")
        if raw_mid is not None and mid is None:
            raise _Invalid(f"mid must be a string, got {_show(raw_mid)}")
        if pld is None:
            raise _Invalid("pld is missing")
        if not isinstance(pld, dict):
            raise _Invalid(f"pld must be an object, got {_show(pld)}")
        if msg_type == "chat":
            if mid is None:
                raise _Invalid("mid is missing")
            return _chat(mid, msg, pld)
        if msg_type == "event":
            name = pld.get("event")
            if not isinstance(name, str) or not name:
                raise _Invalid(f"pld.event must be a non-empty string, got {_show(name)}")
            problem = text_problem(name, MAX_EVENT)
            if problem is not None:
                raise _Invalid(f"pld.event {problem}")
            return Event(name=name)
        if raw_cmd is None:
            raise _Invalid("pld.cmd is missing")
        if not isinstance(raw_cmd, str):
            raise _Invalid(f"pld.cmd must be a string, got {_show(raw_cmd)}")
        return _command(mid, raw_cmd, pld)
    except _Invalid as exc:
        raise ProtocolError(str(exc), msg_type=msg_type, mid=mid, cmd=cmd) from None


# --- outbound ------------------------------------------------------------------------------------


def ack(mid: str | None, cmd: str, code: int = Code.OK, msg: str = "OK") -> Message:
    """A command ack; code 1000 means done, any other code failed with `msg` saying why."""
    message: Message = {"v": VERSION, "type": "command"}
    if mid is not None:  # set-action may come without a mid: then the ack has none either
        message["mid"] = mid
    message["pld"] = {"cmd": cmd, "code": int(code), "msg": msg}
    return message


def chat(mid: str, idx: int, fin: bool, text: str, from_: Sender) -> Message:
    """One chunk of the avatar's answer (`from_="bot"`) or of the user's transcript (`"user"`)."""
    return {
        "v": VERSION,
        "type": "chat",
        "mid": mid,
        "idx": idx,
        "fin": fin,
        "pld": {"from": from_, "text": text},
    }


def event(name: str, **fields: Any) -> Message:
    """An event such as `AUDIO_START` / `AUDIO_END`, or `error` with its `code` and `msg`."""
    return {"v": VERSION, "type": "event", "pld": {"event": name, **fields}}


def error_event(code: int, msg: str) -> Message:
    """An `error` event: something the client sent or asked for failed, and why."""
    return event("error", code=int(code), msg=msg)


_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def encode(message: Mapping[str, Any]) -> str:
    """Serialize a message as compact JSON (UTF-8 characters kept, lone surrogates escaped)."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # A lone surrogate (a JS client's split emoji, echoed back) cannot be encoded as UTF-8; JSON's
    # \uXXXX escape carries it losslessly and only ever occurs inside strings.
    return _LONE_SURROGATE.sub(_escape_surrogate, text)
