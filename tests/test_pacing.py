"""Tracks starved of CPU skip to the frame due now instead of drifting behind the session clock for good.

The overload this guards against: 8 server-rendered sessions on 2 cores handed out ~10 audio frames a second,
so media time fell ever further behind the clock replies are scheduled on, and each reply's speech and
mouth curve piled up unplayed (the 8 x 30 soak grew ~30 MB a minute).
"""

from __future__ import annotations

import numpy as np
import pytest

from liveavatar.media import AUDIO_PTIME, AUDIO_RATE, AUDIO_SAMPLES, VIDEO_FPS, VIDEO_TICKS, ScriptedClock
from liveavatar.session.playback import Playback
from liveavatar.session.speaker import Speaker
from liveavatar.transport.tracks import AUDIO_MAX_LAG, AvatarAudioTrack, AvatarVideoTrack, Drawing, Pacer


async def test_a_pacer_slightly_late_sends_every_frame() -> None:
    clock = ScriptedClock()
    pacer = Pacer(clock, AUDIO_PTIME, AUDIO_MAX_LAG, "audio")
    await clock.advance(AUDIO_MAX_LAG - 0.05)
    frames = [await pacer.next() for _ in range(5)]
    assert frames == [(i, i * AUDIO_PTIME) for i in range(5)]
    assert pacer.skipped == 0


async def test_a_track_starting_on_a_running_clock_starts_now_without_counting_a_loss() -> None:
    clock = ScriptedClock()
    await clock.advance(60.0)  # a rejoin: the session clock has run for a minute
    pacer = Pacer(clock, AUDIO_PTIME, AUDIO_MAX_LAG, "audio")
    index, t = await pacer.next()
    assert t == pytest.approx(60.0) and index == round(60.0 / AUDIO_PTIME)
    assert pacer.skipped == 0


async def test_a_pacer_far_behind_skips_to_the_frame_due_now() -> None:
    clock = ScriptedClock()
    pacer = Pacer(clock, AUDIO_PTIME, AUDIO_MAX_LAG, "audio")
    await pacer.next()
    await clock.advance(3.0)
    index, t = await pacer.next()
    assert 3.0 - AUDIO_PTIME < t <= 3.0
    assert index == round(t / AUDIO_PTIME)
    assert pacer.skipped == index - 1


def test_playback_drops_the_audio_a_skip_jumps_over() -> None:
    playback = Playback()
    ramp = (np.arange(AUDIO_RATE) % 30_000).astype(np.int16)  # one second, every sample telling its position
    playback.schedule(ramp)
    assert np.array_equal(playback.read(0), ramp[:AUDIO_SAMPLES])
    later = AUDIO_RATE // 2
    assert np.array_equal(playback.read(later), ramp[later : later + AUDIO_SAMPLES])
    assert playback.cursor == later + AUDIO_SAMPLES
    playback.read(AUDIO_RATE + AUDIO_SAMPLES)
    assert not playback.busy  # nothing left waiting for a position the track has passed


async def test_a_starved_audio_track_keeps_up_with_the_clock_and_frees_what_it_skipped() -> None:
    clock = ScriptedClock()
    speaker = Speaker()
    track = AvatarAudioTrack(speaker, clock)
    for _ in range(20):
        speaker.playback.schedule(np.full(AUDIO_RATE, 1000, dtype=np.int16))  # 20 s of speech queued
    frames, behind = [], []
    for _ in range(40):  # the process hands out one frame per 200 ms of clock: 1/10 of real time
        frames.append(await track.recv())
        behind.append(clock.now() - frames[-1].pts / AUDIO_RATE)
        await clock.advance(0.2)
    assert max(behind) <= AUDIO_MAX_LAG
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))
    assert speaker.playback.cursor == frames[-1].pts + AUDIO_SAMPLES
    assert track.pacer.skipped > 300


async def test_a_starved_video_track_shows_the_frame_due_now() -> None:
    class Source:
        video_size = (64, 64)

        def __init__(self) -> None:
            self.times: list[float] = []

        def video_picture(self, t: float, can_repeat: bool) -> Drawing:
            self.times.append(t)
            return lambda: np.zeros((64, 64, 3), dtype=np.uint8)

        def audio_frame(self, t: float) -> np.ndarray:
            return np.zeros(AUDIO_SAMPLES, dtype=np.int16)

    clock = ScriptedClock()
    source = Source()
    track = AvatarVideoTrack(source, clock)
    first = await track.recv()
    await clock.advance(1.0)
    frame = await track.recv()
    assert first.pts == 0
    assert frame.pts == round(1.0 * VIDEO_FPS) * VIDEO_TICKS
    assert source.times == [0.0, frame.pts / VIDEO_TICKS / VIDEO_FPS]
