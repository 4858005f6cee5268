"""Fault suite, memory (finding 10): a closed session leaves nothing running that holds it.

Root cause found with a loop of create/join/close cycles in one process: closing the peer made aiortc
report the state "closed", which the session took for a dropped client and answered by starting a
rejoin wait after it had closed; that task held the whole session (renderer, buffers) for the rejoin
grace, ~3.6-4.8 MB per cycle (bench/churn_memory.py measures it). A peer that is being closed reports
nothing to its owner any more.

Talking sessions (bench/soak.py, issue 15): closed sessions waited for a distant full collection, and
glibc's per-thread arenas fragmented; liveavatar/memory.py has the measurements and the fixes.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from liveavatar import memory
from liveavatar.media import AUDIO_SAMPLES, MediaClock
from liveavatar.render.avatars import AvatarRegistry
from liveavatar.session.host import SessionSpec
from liveavatar.session.local import HostLimits, LocalHost, SessionKit
from liveavatar.speech.voices import VoiceRegistry, discover_voices
from liveavatar.transport.peer import Peer
from liveavatar.transport.tracks import Drawing


class StillSource:
    """A grey picture and silence."""

    @property
    def video_size(self) -> tuple[int, int]:
        return (64, 64)

    def video_picture(self, t: float, can_repeat: bool) -> Drawing:
        return lambda: np.full((64, 64, 3), 128, np.uint8)

    def audio_frame(self, t: float) -> npt.NDArray[np.int16]:
        return np.zeros(AUDIO_SAMPLES, np.int16)


async def test_a_peer_being_closed_reports_no_state_to_its_owner() -> None:
    states: list[str] = []
    messages: list[str | bytes] = []
    source = StillSource()
    peer = Peer(source, MediaClock(), [], video=source, on_message=messages.append, on_state=states.append)
    client = RTCPeerConnection()
    try:
        client.createDataChannel("stream-messages")
        client.addTransceiver("audio", direction="recvonly")
        client.addTransceiver("video", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        await peer.answer(client.localDescription.sdp)
        await peer.aclose()
    finally:
        await client.close()
    assert "closed" not in states  # the owner would take it for a dropped client and wait for a rejoin
    assert messages == []


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, pack_dir: Path) -> SessionKit:
    """A host's shared parts, as a worker builds them (no listening models: nothing here listens)."""
    avatars = AvatarRegistry(tmp_path_factory.mktemp("avatars"), pack_dir)
    avatars.prepare([avatars.get("astronaut").pack_key])  # type: ignore[union-attr]
    return SessionKit(avatars=avatars, voices=VoiceRegistry(discover_voices()), ice_servers=[])


async def test_a_closed_session_is_freed_when_it_closes_not_at_a_later_full_collection(kit: SessionKit) -> None:
    """A talking server's memory grew for as long as it ran (bench/soak.py: ~23 MB/min, issue 15).

    A session's peer and renderer are reference cycles, so only the cyclic collector frees them; the
    ~220 k objects a server loads at start put its full collections off for several closed sessions,
    whose memory stayed in use (and grew the malloc arenas) until then. The host frees a session when it
    closes it.
    """
    host = LocalHost("h", kit, HostLimits(join_timeout=60.0, rejoin_grace=20.0))
    client = RTCPeerConnection()
    gc.disable()  # only what the host does may free the session
    try:
        await host.open(SessionSpec("s1", owner_id=1, avatar_id="astronaut", mode_type=1, duration=60.0))
        session = weakref.ref(host._live["s1"])
        client.createDataChannel("stream-messages")
        client.addTransceiver("audio", direction="recvonly")
        client.addTransceiver("video", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        await client.setRemoteDescription(
            RTCSessionDescription(await host.join("s1", client.localDescription.sdp), "answer")
        )
        await host.close("s1", "done")
        # the session (its renderer, speaker, conversation) is freed at once; its aiortc peer follows when
        # aiortc's own transport tasks end (they hold it for a moment after close, depending on timing)
        assert session() is None
    finally:
        gc.enable()
        await client.close()
        await host.aclose()


async def test_heap_trims_wait_until_no_session_speaks(monkeypatch: pytest.MonkeyPatch, kit: SessionKit) -> None:
    """malloc_trim holds the malloc arenas' locks while it walks them (10-77 ms in a worker with 4 talking
    sessions): the media thread's allocations waited that long and audio frames went out late."""
    trims: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1))
    host = LocalHost("h", kit, HostLimits(join_timeout=60.0, rejoin_grace=20.0))
    try:
        await host.open(SessionSpec("s1", owner_id=1, avatar_id="astronaut", mode_type=1, duration=60.0))
        trimmer = asyncio.create_task(memory.trim_periodically(every=0.01))
        await asyncio.sleep(0.1)
        assert trims and not host.speaking()  # quiet: the heap is trimmed
        speaker = host._live["s1"].source.speaker
        speaker.playback.schedule(np.ones(AUDIO_SAMPLES * 50, np.int16))  # a second of speech queued
        assert host.speaking()
        trims.clear()
        await asyncio.sleep(0.1)
        assert not trims and not memory.quiet()  # so a session closing now is collected, not trimmed (host._end)
        while speaker.playback.busy:  # the speech plays out
            speaker.playback.read()
        await asyncio.sleep(0.1)
        assert trims
        trimmer.cancel()
    finally:
        await host.aclose()
    assert memory.quiet()  # a closed host holds no trim back


async def test_a_session_closed_before_it_ran_leaves_no_coroutine_unawaited(kit: SessionKit) -> None:
    host = LocalHost("h", kit, HostLimits(join_timeout=60.0, rejoin_grace=20.0))
    try:
        await host.open(SessionSpec("s1", owner_id=1, avatar_id="astronaut", mode_type=1, duration=60.0))
        await host.close("s1", "done")  # its tasks are cancelled before their first step
        gc.collect()  # an unawaited coroutine warns when collected: pytest fails the test on that warning
    finally:
        await host.aclose()
