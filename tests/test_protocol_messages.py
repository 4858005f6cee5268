"""Stream messages v2: parsing, validation errors and outbound builders."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveavatar.errors import Code
from liveavatar.protocol import (
    ACTIONS,
    AUDIO_END,
    AUDIO_START,
    EXPRESSIONS,
    ChatChunk,
    Event,
    Interrupt,
    ProtocolError,
    SetAction,
    SetParams,
    TurnDetection,
    ack,
    chat,
    encode,
    event,
    parse,
)

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def command(cmd: Any, data: Any = None, mid: Any = "m1", **extra: Any) -> str:
    pld: dict[str, Any] = {"cmd": cmd}
    if data is not None:
        pld["data"] = data
    msg: dict[str, Any] = {"v": 2, "type": "command", "pld": pld, **extra}
    if mid is not None:
        msg["mid"] = mid
    return json.dumps(msg)


def set_params(data: Any) -> SetParams:
    parsed = parse(command("set-params", data))
    assert isinstance(parsed, SetParams)
    return parsed


def error_of(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(raw)
    assert info.value.code == Code.PARAM_ERROR
    return info.value


# --- version and envelope ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "chat", "mid": "a", "idx": 0, "fin": True, "pld": {"text": "hi"}},
        {"v": 1, "type": "chat", "mid": "a", "idx": 0, "fin": True, "pld": {"text": "hi"}},
        {"v": 3, "type": "command", "mid": "a", "pld": {"cmd": "interrupt"}},
        {"v": "2", "type": "command", "mid": "a", "pld": {"cmd": "interrupt"}},
        {"v": True, "type": "command", "mid": "a", "pld": {"cmd": "interrupt"}},
        {"v": None, "type": "nonsense"},
        {"v": 1, "type": "command", "pld": {"cmd": "no-such-cmd"}},
    ],
)
def test_messages_that_are_not_v2_are_ignored(msg: dict[str, Any]) -> None:
    assert parse(json.dumps(msg)) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "message is not valid UTF-8"),
        ("{not json", "message is not valid JSON"),
        ("", "message is not valid JSON"),
        ('{"v": 2, "type": "chat"', "message is not valid JSON"),
        ('{"v": NaN}', "message is not valid JSON (NaN is not JSON)"),
        ("[1, 2]", "message must be a JSON object, got an array"),
        ('"hello"', 'message must be a JSON object, got "hello"'),
        ("42", "message must be a JSON object, got 42"),
        ("null", "message must be a JSON object, got null"),
        ('{"v": 2}', "type is missing"),
        ('{"v": 2, "type": 7}', "unknown type 7 (expected chat, command or event)"),
        ('{"v": 2, "type": "tts"}', 'unknown type "tts" (expected chat, command or event)'),
    ],
)
def test_unreadable_messages_raise_with_a_clear_reason(raw: str | bytes, reason: str) -> None:
    err = error_of(raw)
    assert err.msg.startswith(reason)
    assert str(err) == err.msg
    assert err.mid is None and err.cmd is None
    assert err.as_ack() is None  # nothing to answer: not a readable command


def test_error_reasons_never_echo_huge_values() -> None:
    err = error_of(json.dumps({"v": 2, "type": "x" * 10_000}))
    assert len(err.msg) < 120
    assert err.msg.startswith('unknown type "xxxx')


# --- chat -------------------------------------------------------------------------------------------


def test_chat_chunk_parses_from_str_and_bytes() -> None:
    msg = {"v": 2, "type": "chat", "mid": "m-7", "idx": 3, "fin": False, "pld": {"text": "héllo 😀"}}
    expected = ChatChunk(mid="m-7", idx=3, fin=False, text="héllo 😀")
    assert parse(json.dumps(msg)) == expected
    assert parse(json.dumps(msg, ensure_ascii=False).encode("utf-8")) == expected


def test_chat_ignores_unknown_fields() -> None:
    msg = {
        "v": 2,
        "type": "chat",
        "mid": "a",
        "idx": 0,
        "fin": True,
        "x": 1,
        "pld": {"text": "", "from": "user"},
    }
    assert parse(json.dumps(msg)) == ChatChunk(mid="a", idx=0, fin=True, text="")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mid": None}, "mid is missing"),
        ({"mid": 5}, "mid must be a string, got 5"),
        ({"idx": None}, "idx is missing"),
        ({"idx": -1}, "idx must be an integer >= 0, got -1"),
        ({"idx": 1.5}, "idx must be an integer >= 0, got 1.5"),
        ({"idx": "0"}, 'idx must be an integer >= 0, got "0"'),
        ({"idx": True}, "idx must be an integer >= 0, got true"),
        ({"fin": None}, "fin is missing"),
        ({"fin": 1}, "fin must be true or false, got 1"),
        ({"fin": "true"}, 'fin must be true or false, got "true"'),
        ({"pld": None}, "pld is missing"),
        ({"pld": ["hi"]}, "pld must be an object, got an array"),
        ({"pld": {}}, "pld.text is missing"),
        ({"pld": {"text": 5}}, "pld.text must be a string, got 5"),
        ({"pld": {"text": {"a": 1}}}, "pld.text must be a string, got an object"),
    ],
)
def test_invalid_chat_raises_a_param_error_naming_the_field(change: dict[str, Any], reason: str) -> None:
    msg: dict[str, Any] = {"v": 2, "type": "chat", "mid": "c1", "idx": 0, "fin": True, "pld": {"text": "x"}}
    msg.update(change)
    msg = {k: v for k, v in msg.items() if v is not None}
    err = error_of(json.dumps(msg))
    assert err.msg == reason
    assert err.msg_type == "chat"
    assert err.mid == (msg["mid"] if isinstance(msg.get("mid"), str) else None)
    assert err.as_ack() is None  # chat has no ack in the protocol


# --- commands ---------------------------------------------------------------------------------------


def test_interrupt_with_and_without_mid() -> None:
    assert parse(command("interrupt")) == Interrupt(mid="m1")
    assert parse(command("interrupt", mid=None)) == Interrupt(mid=None)
    assert parse(command("interrupt", data="ignored")) == Interrupt(mid="m1")
    assert Interrupt.cmd == "interrupt"


def test_set_params_full() -> None:
    data = {
        "lang": "de",
        "mode": 2,
        "bgurl": "https://example.com/bg.jpg",
        "vparams": {
            "vid": "v-1",
            "vurl": "https://example.com/v.wav",
            "speed": 1.1,
            "stt_language": "de-DE",
            "pron_map": {"AKool": "ay cool"},
            "stt_type": "openai_realtime",
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.6,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 800,
            },
        },
        "unknown_field": {"future": True},
    }
    assert set_params(data) == SetParams(
        mid="m1",
        lang="de",
        mode=2,
        bgurl="https://example.com/bg.jpg",
        voice_id="v-1",
        voice_url="https://example.com/v.wav",
        speed=1.1,
        stt_language="de-DE",
        pron_map={"AKool": "ay cool"},
        stt_type="openai_realtime",
        turn_detection=TurnDetection("server_vad", 0.6, 300, 800),
    )
    assert SetParams.cmd == "set-params"


def test_set_params_pron_map_is_read_only() -> None:
    params = set_params({"vparams": {"pron_map": {"a": "b"}}})
    assert params.pron_map == {"a": "b"}
    with pytest.raises(TypeError):
        params.pron_map["c"] = "d"  # type: ignore[index]


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"lang": "", "mode": None, "bgurl": "", "vid": "", "vurl": None, "vparams": {}},
        {"vparams": {"vid": "", "vurl": "", "speed": None, "pron_map": {}, "turn_detection": {}}},
        {"vparams": {"turn_detection": {"type": "", "threshold": None}}},
        {"somewhere_else": 1},
    ],
)
def test_set_params_empty_values_mean_not_given(data: Any) -> None:
    assert set_params(data) == SetParams(mid="m1")


def test_set_params_deprecated_top_level_voice_and_vparams_precedence() -> None:
    old, new = "http://a.example/old.wav", "http://a.example/new.wav"
    assert set_params({"vid": "old", "vurl": old}).voice_id == "old"
    assert set_params({"vid": "old", "vurl": old}).voice_url == old
    both = set_params({"vid": "old", "vurl": old, "vparams": {"vid": "new", "vurl": new}})
    assert (both.voice_id, both.voice_url) == ("new", new)
    # An empty value in vparams is "not given", so the deprecated field still counts.
    assert set_params({"vid": "old", "vparams": {"vid": ""}}).voice_id == "old"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"mode": 1}, SetParams(mid="m1", mode=1)),
        ({"vparams": {"speed": 0.8}}, SetParams(mid="m1", speed=0.8)),
        ({"vparams": {"speed": 1.2}}, SetParams(mid="m1", speed=1.2)),
        ({"vparams": {"speed": 1}}, SetParams(mid="m1", speed=1.0)),
        (
            {"vparams": {"turn_detection": {"type": "semantic_vad"}}},
            SetParams(mid="m1", turn_detection=TurnDetection(type="semantic_vad")),
        ),
        (
            {"vparams": {"turn_detection": {"threshold": 0, "prefix_padding_ms": 0, "silence_duration_ms": 0}}},
            SetParams(mid="m1", turn_detection=TurnDetection(None, 0.0, 0, 0)),
        ),
        (
            {"vparams": {"turn_detection": {"threshold": 1}}},
            SetParams(mid="m1", turn_detection=TurnDetection(threshold=1.0)),
        ),
    ],
)
def test_set_params_boundaries_accepted(data: dict[str, Any], expected: SetParams) -> None:
    assert set_params(data) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("fast", 'pld.data must be an object, got "fast"'),
        ([1], "pld.data must be an object, got an array"),
        ({"lang": 5}, "data.lang must be a string, got 5"),
        ({"mode": 3}, "data.mode must be 1 (retelling) or 2 (dialogue), got 3"),
        ({"mode": "2"}, 'data.mode must be 1 (retelling) or 2 (dialogue), got "2"'),
        ({"mode": True}, "data.mode must be 1 (retelling) or 2 (dialogue), got true"),
        ({"bgurl": ["x"]}, "data.bgurl must be a string, got an array"),
        ({"vid": 12}, "data.vid must be a string, got 12"),
        ({"vurl": False}, "data.vurl must be a string, got false"),
        ({"vparams": "x"}, 'data.vparams must be an object, got "x"'),
        ({"vparams": {"vid": 1}}, "data.vparams.vid must be a string, got 1"),
        ({"vparams": {"vurl": 1}}, "data.vparams.vurl must be a string, got 1"),
        ({"vparams": {"speed": 0.5}}, "data.vparams.speed must be a number from 0.8 to 1.2, got 0.5"),
        ({"vparams": {"speed": 1.25}}, "data.vparams.speed must be a number from 0.8 to 1.2, got 1.25"),
        ({"vparams": {"speed": "1"}}, 'data.vparams.speed must be a number from 0.8 to 1.2, got "1"'),
        ({"vparams": {"speed": True}}, "data.vparams.speed must be a number from 0.8 to 1.2, got true"),
        ({"vparams": {"speed": 1e400}}, "data.vparams.speed must be a number from 0.8 to 1.2, got Infinity"),
        ({"vparams": {"stt_language": 1}}, "data.vparams.stt_language must be a string, got 1"),
        ({"vparams": {"stt_type": []}}, "data.vparams.stt_type must be a string, got an array"),
        ({"vparams": {"pron_map": ["a"]}}, "data.vparams.pron_map must be an object, got an array"),
        ({"vparams": {"pron_map": {"w": 1}}}, 'data.vparams.pron_map["w"] must be a string, got 1'),
        (
            {"vparams": {"turn_detection": "server_vad"}},
            'data.vparams.turn_detection must be an object, got "server_vad"',
        ),
        (
            {"vparams": {"turn_detection": {"type": "client_vad"}}},
            'data.vparams.turn_detection.type must be one of server_vad, semantic_vad; got "client_vad"',
        ),
        (
            {"vparams": {"turn_detection": {"threshold": 1.5}}},
            "data.vparams.turn_detection.threshold must be a number from 0.0 to 1.0, got 1.5",
        ),
        (
            {"vparams": {"turn_detection": {"threshold": -0.1}}},
            "data.vparams.turn_detection.threshold must be a number from 0.0 to 1.0, got -0.1",
        ),
        (
            {"vparams": {"turn_detection": {"prefix_padding_ms": -1}}},
            "data.vparams.turn_detection.prefix_padding_ms must be an integer from 0 to 3600000 (ms), got -1",
        ),
        (
            {"vparams": {"turn_detection": {"prefix_padding_ms": 2.5}}},
            "data.vparams.turn_detection.prefix_padding_ms must be an integer from 0 to 3600000 (ms), got 2.5",
        ),
        (
            {"vparams": {"turn_detection": {"silence_duration_ms": "500"}}},
            'data.vparams.turn_detection.silence_duration_ms must be an integer from 0 to 3600000 (ms), got "500"',
        ),
        (
            {"vparams": {"turn_detection": {"silence_duration_ms": 3_600_001}}},
            "data.vparams.turn_detection.silence_duration_ms must be an integer from 0 to 3600000 (ms), got 3600001",
        ),
        (
            {"vparams": {"speed": 10**400}},
            "data.vparams.speed must be a number from 0.8 to 1.2, got 1000000000000000000000000000000000000...",
        ),
        (
            {"vparams": {"turn_detection": {"silence_duration_ms": True}}},
            "data.vparams.turn_detection.silence_duration_ms must be an integer from 0 to 3600000 (ms), got true",
        ),
    ],
)
def test_set_params_invalid_values_name_the_field(data: Any, reason: str) -> None:
    raw = command("set-params", data).replace("Infinity", "1e400")
    err = error_of(raw)
    assert err.msg == reason
    assert (err.msg_type, err.mid, err.cmd) == ("command", "m1", "set-params")
    assert err.as_ack() == {
        "v": 2,
        "type": "command",
        "mid": "m1",
        "pld": {"cmd": "set-params", "code": 1003, "msg": reason},
    }


@pytest.mark.parametrize("action", ACTIONS)
def test_set_action_every_action(action: str) -> None:
    assert parse(command("set-action", {"action": action})) == SetAction(mid="m1", action=action)  # type: ignore[arg-type]


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_set_action_every_expression(expression: str) -> None:
    parsed = parse(command("set-action", {"expression": expression}, mid=None))
    assert parsed == SetAction(mid=None, expression=expression)  # type: ignore[arg-type]


def test_set_action_both_and_empty_one() -> None:
    assert parse(command("set-action", {"action": "nod", "expression": "happiness"})) == SetAction(
        mid="m1", action="nod", expression="happiness"
    )
    assert parse(command("set-action", {"action": "", "expression": "fear"})) == SetAction(mid="m1", expression="fear")
    assert SetAction.cmd == "set-action"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "set-action needs data.action or data.expression"),
        ({}, "set-action needs data.action or data.expression"),
        ({"action": "", "expression": None}, "set-action needs data.action or data.expression"),
        ({"action": "jump"}, f'data.action must be one of {", ".join(ACTIONS)}; got "jump"'),
        ({"action": "Nod"}, f'data.action must be one of {", ".join(ACTIONS)}; got "Nod"'),
        ({"action": 3}, f"data.action must be one of {', '.join(ACTIONS)}; got 3"),
        (
            {"action": "nod", "expression": "bored"},
            f'data.expression must be one of {", ".join(EXPRESSIONS)}; got "bored"',
        ),
    ],
)
def test_set_action_invalid(data: Any, reason: str) -> None:
    err = error_of(command("set-action", data, mid=None))
    assert err.msg == reason
    assert (err.msg_type, err.mid, err.cmd) == ("command", None, "set-action")
    # Without a mid the ack carries none either.
    assert err.as_ack() == {
        "v": 2,
        "type": "command",
        "pld": {"cmd": "set-action", "code": 1003, "msg": reason},
    }


@pytest.mark.parametrize(
    ("raw", "reason", "mid", "cmd"),
    [
        (command("dance"), 'unknown cmd "dance" (expected interrupt, set-params, set-action)', "m1", "dance"),
        (command(None), "pld.cmd is missing", "m1", None),
        (command(7), "pld.cmd must be a string, got 7", "m1", None),
        (command("interrupt", mid=12), "mid must be a string, got 12", None, "interrupt"),
        ('{"v": 2, "type": "command", "mid": "m1"}', "pld is missing", "m1", None),
        (
            '{"v": 2, "type": "command", "mid": "m1", "pld": "interrupt"}',
            'pld must be an object, got "interrupt"',
            "m1",
            None,
        ),
    ],
)
def test_invalid_commands_are_acked_with_1003(raw: str, reason: str, mid: str | None, cmd: str | None) -> None:
    err = error_of(raw)
    assert (err.msg, err.mid, err.cmd, err.msg_type) == (reason, mid, cmd, "command")
    reply = err.as_ack()
    assert reply is not None
    assert reply["pld"] == {"cmd": cmd or "", "code": 1003, "msg": reason}
    assert reply.get("mid") == mid


def test_unknown_command_reason_is_short_even_for_a_huge_cmd() -> None:
    err = error_of(command("z" * 5000))
    assert err.cmd is None  # the ack does not echo an oversized cmd (it could not be sent)...
    assert len(err.msg) < 120  # ...and the reason stays readable
    assert error_of(command("zz")).cmd == "zz"  # a short unknown cmd is echoed


# --- events -----------------------------------------------------------------------------------------


def test_event_parses_and_requires_a_name() -> None:
    assert parse('{"v":2,"type":"event","pld":{"event":"audio_start"}}') == Event("audio_start")
    err = error_of('{"v":2,"type":"event","pld":{}}')
    assert err.msg == "pld.event must be a non-empty string, got null"
    assert err.as_ack() is None


# --- outbound ---------------------------------------------------------------------------------------


def test_ack_builder() -> None:
    assert ack("m1", "interrupt") == {
        "v": 2,
        "type": "command",
        "mid": "m1",
        "pld": {"cmd": "interrupt", "code": 1000, "msg": "OK"},
    }
    failed = ack("m2", "set-params", Code.NOT_FOUND, "voice not found")
    assert encode(failed) == (
        '{"v":2,"type":"command","mid":"m2","pld":{"cmd":"set-params","code":1008,"msg":"voice not found"}}'
    )
    assert type(failed["pld"]["code"]) is int
    assert "mid" not in ack(None, "set-action")


def test_chat_and_event_builders() -> None:
    assert chat("b1", 0, False, "Hi", "bot") == {
        "v": 2,
        "type": "chat",
        "mid": "b1",
        "idx": 0,
        "fin": False,
        "pld": {"from": "bot", "text": "Hi"},
    }
    assert encode(chat("u1", 2, True, "ja", "user")) == (
        '{"v":2,"type":"chat","mid":"u1","idx":2,"fin":true,"pld":{"from":"user","text":"ja"}}'
    )
    assert encode(event(AUDIO_START)) == '{"v":2,"type":"event","pld":{"event":"audio_start"}}'
    assert event(AUDIO_END)["pld"] == {"event": "audio_end"}
    assert parse(encode(event("custom"))) == Event("custom")


def test_encode_keeps_unicode_and_escapes_lone_surrogates() -> None:
    encoded = encode(chat("m", 0, True, 'ü中😀"\\\n\x00', "bot"))
    assert '"text":"ü中😀\\"\\\\\\n\\u0000"' in encoded
    lone = encode(chat("m", 0, True, "a\ud83d", "bot"))
    assert "\\ud83d" in lone
    lone.encode("utf-8")  # would raise on a raw surrogate
    assert json.loads(lone)["pld"]["text"] == "a\ud83d"


# --- properties -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["v", "type", "mid", "idx", "fin", "pld", "cmd", "data", "text", "event"])
messy_messages = st.fixed_dictionaries(
    {"v": st.just(2), "type": st.sampled_from(["chat", "command", "event", "x"])},
    optional={
        "mid": json_values,
        "idx": json_values,
        "fin": json_values,
        "pld": st.fixed_dictionaries(
            {},
            optional={
                "cmd": st.sampled_from(["interrupt", "set-params", "set-action"]) | json_values,
                "data": st.dictionaries(
                    st.sampled_from(["lang", "mode", "bgurl", "vid", "vurl", "vparams", "action", "expression"]),
                    json_values,
                )
                | json_values,
                "text": json_values,
                "event": json_values,
            },
        )
        | json_values,
    },
) | st.dictionaries(field_names, json_values)


@PROPERTY
@given(messy_messages)
def test_any_message_parses_or_raises_protocol_error(msg: dict[str, Any]) -> None:
    try:
        parsed = parse(json.dumps(msg))
    except ProtocolError as err:
        assert err.code == Code.PARAM_ERROR
        assert err.msg
        reply = err.as_ack()
        if reply is not None:
            json.dumps(reply)  # always serializable
        return
    assert parsed is None or isinstance(parsed, ChatChunk | Interrupt | SetParams | SetAction | Event)


set_params_data = st.fixed_dictionaries(
    {},
    optional={
        "lang": json_values,
        "mode": st.sampled_from([1, 2, 0, 3, 1.0, True, "1"]) | json_values,
        "bgurl": json_values,
        "vid": json_values,
        "vurl": json_values,
        "vparams": st.fixed_dictionaries(
            {},
            optional={
                "vid": json_values,
                "vurl": json_values,
                "speed": st.floats(0.5, 1.5) | st.integers(-(10**30), 10**30) | json_values,
                "stt_language": json_values,
                "stt_type": json_values,
                "pron_map": st.dictionaries(st.text(max_size=5), st.text(max_size=5) | json_values) | json_values,
                "turn_detection": st.fixed_dictionaries(
                    {},
                    optional={
                        "type": st.sampled_from(["server_vad", "semantic_vad", ""]) | json_values,
                        "threshold": st.floats(-0.5, 1.5) | json_values,
                        "prefix_padding_ms": st.integers(-5, 10**8) | json_values,
                        "silence_duration_ms": st.integers(-5, 10**8) | json_values,
                    },
                )
                | json_values,
            },
        )
        | json_values,
    },
)


@PROPERTY
@given(set_params_data)
def test_any_set_params_data_is_accepted_or_refused_with_a_field_name(data: dict[str, Any]) -> None:
    try:
        parsed = parse(command("set-params", data))
    except ProtocolError as err:
        assert (err.code, err.cmd, err.mid) == (Code.PARAM_ERROR, "set-params", "m1")
        assert err.msg.startswith(("data.", "pld.data "))
        return
    assert isinstance(parsed, SetParams)
    if parsed.speed is not None:
        assert 0.8 <= parsed.speed <= 1.2
    td = parsed.turn_detection
    if td is not None:
        assert td != TurnDetection()
        assert td.threshold is None or 0.0 <= td.threshold <= 1.0
        assert td.type in (None, "server_vad", "semantic_vad")


@PROPERTY
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_protocol_error(raw: bytes) -> None:
    try:
        parse(raw)
    except ProtocolError as err:
        assert err.code == Code.PARAM_ERROR


@PROPERTY
@given(mid=st.text(max_size=128), idx=st.integers(0, 1 << 20), fin=st.booleans(), text=st.text())
def test_chat_round_trips_through_encode_and_parse(mid: str, idx: int, fin: bool, text: str) -> None:
    assert parse(encode(chat(mid, idx, fin, text, "user")).encode("utf-8")) == ChatChunk(mid, idx, fin, text)
