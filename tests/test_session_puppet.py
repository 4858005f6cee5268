"""The puppet (a client-rendered session's avatar) driven frame by frame as the audio track drives it."""

from __future__ import annotations

import numpy as np

from liveavatar.media import AUDIO_PTIME, AUDIO_RATE, AUDIO_SAMPLES
from liveavatar.protocol.animation import Animation, Cut, Frames, Hello, decode
from liveavatar.render.motion import Motion
from liveavatar.session.puppet import BATCH, FRAME_SAMPLES, LEAD, RTP_WAIT, Puppet
from liveavatar.speech.base import SpeechChunk

ORIGIN = 0xFFFF_FF00  # near the wrap: rtp_base arithmetic is modulo 2^32


class Channel:
    """The animation channel's sending side as the puppet sees it: messages kept, open or closed."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.open = True
        self.origin: int | None = ORIGIN

    def send(self, data: bytes) -> bool:
        if self.open:
            self.sent.append(data)
        return self.open

    def messages(self) -> list[Animation]:
        return [decode(m) for m in self.sent]


def play(puppet: Puppet, frames: int, start: int = 0) -> int:
    """Pull `frames` 20 ms audio frames as the audio track does; returns the next frame index."""
    for index in range(start, start + frames):
        assert len(puppet.audio_frame(index * AUDIO_PTIME)) == AUDIO_SAMPLES
    return start + frames


def speech(seconds: float) -> SpeechChunk:
    """A loud vowel-like buzz without phoneme timings (the mouth follows its energy)."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    audio = (12000 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.int16)
    return SpeechChunk("ah", audio, AUDIO_RATE)


def attached() -> tuple[Puppet, Channel]:
    puppet = Puppet("astronaut", (512, 512), Motion(seed=3))
    channel = Channel()
    puppet.attach(channel.send, lambda: channel.origin)
    return puppet, channel


def test_nothing_is_computed_or_sent_before_the_client_opens_the_channel() -> None:
    puppet = Puppet("astronaut", (512, 512), Motion(seed=3))
    play(puppet, 100)
    assert puppet.frames_sent == 0


def test_hello_then_batches_ahead_of_the_audio_on_the_frame_grid() -> None:
    puppet, channel = attached()
    play(puppet, 200)  # 4 s
    messages = channel.messages()
    hello = messages[0]
    assert isinstance(hello, Hello)
    assert (hello.fps, hello.width, hello.height, hello.rtp_base) == (25, 512, 512, ORIGIN)
    assert hello.info["rtp_known"] is True and hello.info["web_pack"].endswith("/astronaut")
    frames = [m for m in messages if isinstance(m, Frames)]
    assert all(len(f.states) == BATCH for f in frames)
    firsts = [f.first_position for f in frames]
    assert firsts == list(range(0, len(frames) * BATCH * FRAME_SAMPLES, BATCH * FRAME_SAMPLES))
    # the last batch starts within LEAD of the audio handed out: 4 s of audio, frames up to ~4.3 s
    assert 200 * AUDIO_SAMPLES <= frames[-1].first_position < 200 * AUDIO_SAMPLES + LEAD
    assert not any(isinstance(m, Cut) for m in messages)


def test_a_track_starting_late_moves_the_playback_with_it() -> None:
    puppet, channel = attached()
    play(puppet, 10, start=500)  # a rejoined track: pts 10 s on (the session clock went on), the playback at 0
    assert puppet.speaker.playback.cursor == 510 * AUDIO_SAMPLES  # positions follow the track's time
    messages = channel.messages()
    hello = messages[0]
    assert isinstance(hello, Hello)
    assert hello.rtp_base == ORIGIN
    frames = [m for m in messages if isinstance(m, Frames)]
    assert frames[0].first_position == 500 * AUDIO_SAMPLES  # nothing sent for the time before the join


def test_without_an_rtp_origin_the_stream_starts_after_a_second_with_rtp_base_zero() -> None:
    puppet, channel = attached()
    channel.origin = None
    play(puppet, RTP_WAIT)
    assert channel.sent == []
    play(puppet, 1, start=RTP_WAIT)
    hello = channel.messages()[0]
    assert isinstance(hello, Hello) and hello.rtp_base == 0 and hello.info["rtp_known"] is False


def test_speech_queued_inside_the_sent_window_cuts_and_the_mouth_opens() -> None:
    puppet, channel = attached()
    index = play(puppet, 50)
    sent = len(channel.sent)
    start, end = puppet.speaker.speak(speech(1.0), speech(1.0).audio)
    play(puppet, 100, start=index)
    messages = channel.messages()[sent:]
    assert isinstance(messages[0], Cut)
    assert messages[0].position == index * AUDIO_SAMPLES  # from the frame whose sound goes next
    faces = {}
    for m in messages:
        if isinstance(m, Frames):
            faces.update(zip(m.positions(), m.states, strict=True))
    during = [float(s.mouth.sum()) for p, s in faces.items() if start * AUDIO_RATE + 4000 <= p < end * AUDIO_RATE]
    after = [float(s.mouth.sum()) for p, s in faces.items() if p >= end * AUDIO_RATE + 0.4 * AUDIO_RATE]
    assert during and np.mean(during) > 0.2
    assert after and max(after) < 0.05


def test_speech_queued_far_ahead_of_the_sent_window_needs_no_cut() -> None:
    puppet, channel = attached()
    puppet.speaker.speak(speech(3.0), speech(3.0).audio)
    index = play(puppet, 50)
    puppet.speaker.speak(speech(1.0), speech(1.0).audio)  # starts at 3.04 s: well past the frames sent by 1 s
    play(puppet, 20, start=index)
    assert not any(isinstance(m, Cut) for m in channel.messages())


def test_interrupt_and_actions_cut_at_the_audio_handed_out() -> None:
    puppet, channel = attached()
    puppet.speaker.speak(speech(3.0), speech(3.0).audio)
    index = play(puppet, 50)
    stop = puppet.speaker.silence()
    index = play(puppet, 1, start=index)
    cut = channel.messages()[-2]
    assert isinstance(cut, Cut) and stop * AUDIO_RATE <= cut.position < stop * AUDIO_RATE + FRAME_SAMPLES
    puppet.motion.start_expression("happiness", index * AUDIO_PTIME)
    puppet.restart()
    play(puppet, 1, start=index)
    assert sum(isinstance(m, Cut) for m in channel.messages()) == 2


def test_a_background_change_says_hello_again() -> None:
    puppet, channel = attached()
    play(puppet, 5)
    puppet.show_background("https://example.com/bg.jpg")
    hello = channel.messages()[-1]
    assert isinstance(hello, Hello)
    assert hello.info["background"] == {"url": "https://example.com/bg.jpg", "video": False}


def test_a_failing_channel_never_stops_the_audio() -> None:
    puppet = Puppet("astronaut", (512, 512), Motion(seed=3))

    def broken(_data: bytes) -> bool:
        raise RuntimeError("the channel broke")

    puppet.attach(broken, lambda: ORIGIN)
    play(puppet, 10)  # the error is logged, the stream stops, the audio goes on
    assert puppet.frames_sent == 0


def test_a_closed_channel_stops_the_stream_until_the_next_attach() -> None:
    puppet, channel = attached()
    index = play(puppet, 20)
    channel.open = False
    index = play(puppet, 20, start=index)  # a batch falls due and cannot go
    sent = len(channel.sent)
    channel.open = True
    index = play(puppet, 50, start=index)
    assert len(channel.sent) == sent  # stopped: nothing computed or sent until a channel opens again
    puppet.attach(channel.send, lambda: ORIGIN)
    play(puppet, 1, start=index)
    assert isinstance(channel.messages()[sent], Hello)
