"""Fault suite, memory (finding 10): a closed session leaves nothing running that holds it.

Root cause found with a loop of create/join/close cycles in one process: closing the peer made aiortc
report the state "closed", which the session took for a dropped client and answered by starting a
rejoin wait after it had closed; that task held the whole session (renderer, buffers) for the rejoin
grace, ~3.6-4.8 MB per cycle (bench/churn_memory.py measures it). A peer that is being closed reports
nothing to its owner any more.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection

from liveavatar.media import AUDIO_SAMPLES, MediaClock
from liveavatar.transport.peer import Peer


class StillSource:
    """A grey picture and silence."""

    @property
    def video_size(self) -> tuple[int, int]:
        return (64, 64)

    def video_frame(self, t: float) -> npt.NDArray[np.uint8]:
        return np.full((64, 64, 3), 128, np.uint8)

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
