"""The local llama.cpp backend with the real packaged SmolLM2: streaming, cancellation, shared model, prompts."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

importlib.import_module("llama_cpp")

from liveavatar.llm import (  # noqa: E402
    LLM,
    ChatMessage,
    LLMError,
    LLMSettings,
    LocalLLM,
    WithRetries,
    WithTimeout,
    build_llm,
    build_messages,
    estimate_tokens,
)
from liveavatar.llm.local import (  # noqa: E402
    PACKAGED_MODELS,
    PackagedModel,
    auto_threads,
    installed_models,
    packaged_model_path,
)
from liveavatar.llm.prompt import PassagesIn  # noqa: E402
from liveavatar.session.dialogue import Brain, Dialogue  # noqa: E402
from liveavatar.session.turn import Sentence  # noqa: E402

QUESTION = [
    ChatMessage("system", "You are a helpful assistant. Answer in one or two short sentences."),
    ChatMessage("user", "What is the capital of France?"),
]
STORY = [ChatMessage("user", "Tell me a very long story about a dragon who learns to bake bread.")]


@pytest.fixture(scope="module")
def local() -> LocalLLM:
    llm = LocalLLM()
    llm.load()
    return llm


async def _answer(llm: LLM, messages: list[ChatMessage], max_tokens: int = 64) -> list[str]:
    return [delta async for delta in llm.stream(messages, max_tokens=max_tokens, temperature=0.0)]


async def test_question_streams_an_answer_in_several_deltas(local: LocalLLM) -> None:
    # speed figures (first token, tokens/s): bench/models.py
    deltas = await _answer(local, QUESTION, max_tokens=96)
    answer = "".join(deltas)
    assert answer.strip()
    assert len(deltas) >= 3


async def test_closing_the_stream_stops_generation_within_a_token(local: LocalLLM) -> None:
    llama = local.load().llama
    stream = local.stream(STORY, max_tokens=400, temperature=0.7)
    deltas = [await anext(stream) for _ in range(5)]
    at_close = llama.n_tokens  # tokens in the context now: grows by one per generated token
    await stream.aclose()  # type: ignore[attr-defined]
    after = llama.n_tokens
    await asyncio.sleep(0.3)
    assert llama.n_tokens == after, "generation went on after the stream closed"
    print(f"\nclose: {after - at_close} token(s) generated after the consumer closed the stream")
    assert after - at_close <= 2
    assert "".join(deltas)


async def test_cancelling_the_task_stops_generation_within_a_token(local: LocalLLM) -> None:
    llama = local.load().llama
    five = asyncio.Event()
    got: list[str] = []

    async def consume() -> None:
        async for delta in local.stream(STORY, max_tokens=400, temperature=0.7):
            got.append(delta)
            if len(got) == 5:
                five.set()

    task = asyncio.create_task(consume())
    await five.wait()
    at_cancel = llama.n_tokens
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    after = llama.n_tokens
    await asyncio.sleep(0.3)
    assert llama.n_tokens == after, "generation went on after the task was cancelled"
    print(f"\ncancel: {after - at_cancel} token(s) generated after the task was cancelled")
    assert after - at_cancel <= 2
    # The model is fine afterwards.
    assert "".join(await _answer(local, QUESTION)).strip()


async def test_sessions_share_one_model_and_queue_on_it(local: LocalLLM) -> None:
    other = LocalLLM()
    assert other.load() is local.load()
    built = build_llm(LLMSettings(backend="local", timeout=600, first_token_timeout=600))  # queued: no race
    assert isinstance(built, WithRetries) and isinstance(built.llm, WithTimeout)
    inner = built.llm.llm
    assert isinstance(inner, LocalLLM) and inner.load() is local.load()
    answers = await asyncio.gather(
        _answer(local, QUESTION, 24), _answer(other, QUESTION, 24), _answer(built, STORY, 24)
    )
    assert all("".join(answer).strip() for answer in answers)


async def test_first_token_timeout_frees_the_model(local: LocalLLM) -> None:
    llm = WithTimeout(local, first_token_timeout=0.001, total_timeout=30)
    with pytest.raises(LLMError, match="did not start answering"):
        await _answer(llm, QUESTION)
    assert "".join(await _answer(local, QUESTION, 16)).strip()


async def test_prompt_over_the_context_is_a_non_retryable_llm_error(local: LocalLLM) -> None:
    huge = [ChatMessage("user", "word " * 5000)]
    with pytest.raises(LLMError) as info:
        await _answer(local, huge)
    assert info.value.retryable is False


async def test_built_prompt_with_long_history_fits_the_model(local: LocalLLM) -> None:
    history: list[ChatMessage] = []
    for turn in range(80):
        history.append(ChatMessage("user", f"Question number {turn} about the hotel and its many rooms, please?"))
        history.append(ChatMessage("assistant", f"Answer number {turn}: the hotel has rooms of every size. " * 3))
    layouts: list[tuple[Callable[[str], int], PassagesIn]] = [(estimate_tokens, "system"), (local.count_tokens, "turn")]
    for count, passages_in in layouts:
        messages = build_messages(
            instructions="You are Anna, the receptionist of the Blue Lagoon hotel.",
            passages=["Check-in at the Blue Lagoon hotel starts at 3 pm; check-out is at 11 am."],
            language="en",
            history=history,
            user_text="When is check-in?",
            context_tokens=local.context_tokens,
            max_answer_tokens=128,
            count_tokens=count,
            passages_in=passages_in,
        )
        assert len(messages) < len(history)
        answer = "".join(await _answer(local, messages, max_tokens=48))
        assert answer.strip()
        print(f"\n{len(messages) - 2} history messages ({count.__name__}, passages in {passages_in}): {answer!r}")


async def test_sessions_taking_turns_resume_from_saved_states(local: LocalLLM) -> None:
    histories: dict[str, list[ChatMessage]] = {}
    for name in ("alice", "bob"):
        history = histories[name] = []
        for turn in range(5):
            history.append(ChatMessage("user", f"{name} asks question {turn} about the rooms and the spa?"))
            history.append(
                ChatMessage("assistant", f"Answer {turn} for {name}: the rooms are nice and the spa is open.")
            )
    for turn in range(2):
        for name, history in histories.items():
            messages = build_messages(
                instructions="You are Anna, the receptionist.",
                passages=[f"Passage for turn {turn}: the spa opens at {turn + 8} am."],
                language="en",
                history=history,
                user_text=f"When does the spa open? ({name}, turn {turn})",
                context_tokens=local.context_tokens,
                max_answer_tokens=16,
                count_tokens=local.count_tokens,
                passages_in="turn",
            )
            answer = "".join([delta async for delta in local.stream(messages, max_tokens=16, temperature=0.7)])
            history += [ChatMessage("user", messages[-1].content), ChatMessage("assistant", answer)]
    cache = local.load().llama.cache
    assert cache is not None and len(cache.cache_state) >= 2


def test_estimate_errs_high_against_the_real_tokenizer(local: LocalLLM) -> None:
    local.load()
    samples = [
        "The quick brown fox jumps over the lazy dog, and then it runs away into the forest.",
        "Check-in at the Blue Lagoon hotel starts at 3 pm; check-out is at 11 am.",
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "Ça va très bien, merci beaucoup! Où est la gare?",
        "東京は日本の首都です。",
        "Привет, как дела?",
        "Call 555-0134 between 9:30 and 17:45, or write to desk@example.com.",
    ]
    for text in samples:
        assert estimate_tokens(text) >= local.count_tokens(text), text
    prose = Path(__file__).read_text()  # a mix of prose and code
    print(f"\nestimate / SmolLM2 tokens on this file: {estimate_tokens(prose) / local.count_tokens(prose):.2f}")
    assert estimate_tokens(prose) >= local.count_tokens(prose)


def test_packaged_model_in_pieces_is_joined_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: LocalLLM
) -> None:
    whole = local.load().path.read_bytes()
    cut = len(whole) // 3
    for number, piece in enumerate((whole[:cut], whole[cut:]), 1):  # two packages of one piece each
        package = tmp_path / "site" / f"la_test_part{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{number}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setitem(
        PACKAGED_MODELS,
        "split-test",
        PackagedModel(("la_test_part1", "la_test_part2"), ("data/part1.bin", "data/part2.bin"), "split.gguf"),
    )
    assert "split-test" in installed_models()
    joined = packaged_model_path("split-test", cache_dir=tmp_path / "cache")
    assert joined == tmp_path / "cache" / "split.gguf" and joined.read_bytes() == whole
    written = joined.stat().st_mtime_ns
    assert packaged_model_path("split-test", cache_dir=tmp_path / "cache").stat().st_mtime_ns == written
    assert list((tmp_path / "cache").iterdir()) == [joined]  # no partial file left behind

    monkeypatch.setitem(PACKAGED_MODELS, "absent", PackagedModel(("la_no_such_part",), ("model.gguf",)))
    assert "absent" not in installed_models()
    with pytest.raises(LLMError, match="pip install la-no-such-part"):
        packaged_model_path("absent")
    with pytest.raises(LLMError, match="unknown local model"):
        LocalLLM(local_model="no-such-model").load()


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_auto_threads_leave_cores_to_speech_and_media(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    assert auto_threads() == threads


async def test_dialogue_reports_each_stage_before_the_first_sound(local: LocalLLM) -> None:
    stages: list[tuple[str, float]] = []
    settings = LLMSettings(max_tokens=48, temperature=0.0)
    dialogue = Dialogue(Brain(local, settings), timing=lambda stage, seconds: stages.append((stage, seconds)))
    items = [item async for item in dialogue.answer("What is the capital of France?", language="en", image=None)]
    assert any(isinstance(item, Sentence) for item in items)
    assert [stage for stage, _ in stages] == ["retrieval", "prompt_build", "llm_first_token", "first_clause"]
    assert all(seconds >= 0 for _, seconds in stages)


async def test_an_interrupted_answer_stops_the_llm_at_once(local: LocalLLM) -> None:
    class Watched:  # the real model, noting when its stream is closed
        def __init__(self) -> None:
            self.closed = False

        def __getattr__(self, name: str) -> object:
            return getattr(local, name)

        async def stream(self, *args: object, **kwargs: object) -> AsyncIterator[str]:
            try:
                async for delta in local.stream(*args, **kwargs):  # type: ignore[arg-type]
                    yield delta
            finally:
                self.closed = True

    watched = Watched()
    dialogue = Dialogue(Brain(watched, LLMSettings(max_tokens=200, temperature=0.0)))  # type: ignore[arg-type]
    answer = dialogue.answer("Tell me a long story about a dragon.", language="en", image=None)
    await anext(answer)
    await answer.aclose()  # as an interrupt closes the reply's text
    assert watched.closed  # now, not whenever the garbage collector gets to the stream
