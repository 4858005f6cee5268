"""Soak: N talking sessions for M minutes, with create/join/close churn and a fuzz mix on the data channel.

    python bench/soak.py --sessions 8 --minutes 30                          # the issue's run
    python bench/soak.py --sessions 8 --minutes 30 --render client --workers 2
    python bench/soak.py --sessions 2 --minutes 5                           # what a shared 2-core box allows

One `liveavatar serve` subprocess (with `--workers` worker processes; RSS counts them all); the clients
(aiortc) run in this process. Each talking session says a
paragraph, and the next as soon as `audio_end` arrives. Alongside: a churn loop creates, joins, fuzzes and
closes a session every `--churn-every` seconds, and every talking session gets `--fuzz-per-second` junk
messages a second (non-JSON, wrong shapes, oversized fields, invalid Unicode, malformed URLs, bad
pron_maps) plus one real command whose ack is awaited. Every `--sample-every` seconds it prints the
server's RSS, each session's video frames and largest frame gap, audio frames and largest audio gap, and
the error counts so far. The summary gives RSS growth after warm-up (the issue's bar: < 5 %), continuity
and errors; the JSON goes to `--output`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from client_render_client import join_client_rendered
from common import BENCH_DIR, Reply, ServerProcess, machine_info, run_bench
from liveavatar.client import LiveAvatarApi
from liveavatar.client.connection import Message
from speaking_client import CREATE_PARAMS, PARAGRAPHS, THRESHOLD, event_name, peak
from transport_client import Stream, count_video_only, join_session

AUDIO_GAP_MS = 60.0
VIDEO_GAP_MS = 200.0
ACK_TIMEOUT = 15.0

BAD_PRON = {"pron_map": {"a": "\ud800"}}
FUZZ: tuple[str | bytes, ...] = (
    b"\xff\xfe not utf-8",
    "{not json",
    "[]",
    '{"v":2}',
    '{"v":2,"type":"chat","mid":"j","idx":"0","fin":true,"pld":{"text":"x"}}',
    '{"v":2,"type":"chat","mid":"j","idx":0,"fin":true,"pld":{}}',
    json.dumps({"v": 2, "type": "command", "mid": "f1", "pld": {"cmd": "z" * 20_000}}),
    json.dumps({"v": 2, "type": "command", "mid": "m" * 1_100, "pld": {"cmd": "interrupt"}}),
    json.dumps({"v": 2, "type": "command", "mid": "f2", "pld": {"cmd": "set-params", "data": {"lang": "l" * 20_000}}}),
    json.dumps({"v": 2, "type": "command", "mid": "f3", "pld": {"cmd": "set-params", "data": {"lang": "e\ud800"}}}),
    json.dumps(
        {"v": 2, "type": "command", "mid": "f4", "pld": {"cmd": "set-params", "data": {"bgurl": "http://a:99999/x"}}}
    ),
    json.dumps(
        {"v": 2, "type": "command", "mid": "f5", "pld": {"cmd": "set-params", "data": {"bgurl": "http://[::1/x"}}}
    ),
    json.dumps(
        {
            "v": 2,
            "type": "command",
            "mid": "f6",
            "pld": {"cmd": "set-params", "data": {"vparams": {"pron_map": {"a": "\ud800"}}}},
        }
    ),
    json.dumps({"v": 2, "type": "command", "mid": "f7", "pld": {"cmd": "set-action", "data": {"action": "moonwalk"}}}),
    json.dumps({"v": 2, "type": "chat", "mid": "p", "idx": 3, "fin": False, "pld": {"text": "y" * 30_000}}),
)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process and its children (the server's workers), MB: all of it (VmRSS), or only
    the anonymous pages (RssAnon: without the model and library files mapped, whose pages count as resident
    as they are first read)."""
    total = 0.0
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                total += int(line.split()[1]) / 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += rss_mb(int(child), field)
    return total


@dataclass
class Counts:
    """Errors and outcomes over the whole run."""

    error_events: int = 0
    failed_acks: int = 0
    acks_ok: int = 0
    acks_missing: int = 0
    fuzz_sent: int = 0
    churn_ok: int = 0
    churn_failed: int = 0
    replies_finished: int = 0
    churn_errors: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        """The counters (every field but the error texts)."""
        return {name: value for name, value in vars(self).items() if isinstance(value, int)}


@dataclass
class Talker:
    """A session kept talking, fuzzed, and measured (video frames by its Stream, audio and messages here)."""

    stream: Stream
    counts: Counts
    paragraphs: itertools.cycle[str]
    audio: list[float] = field(default_factory=list)
    sound: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.stream.start_counting()
        self.tasks = [
            asyncio.create_task(self._read_audio(), name=f"audio-{self.stream.session_id}"),
            asyncio.create_task(self._read_messages(), name=f"messages-{self.stream.session_id}"),
        ]
        self.stream.conn.send_chat(next(self.paragraphs))

    async def _read_audio(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.stream.conn.audio.get()
            self.audio.append(loop.time())
            self.sound += peak(frame) > THRESHOLD

    async def _read_messages(self) -> None:
        while True:
            message: Message = await self.stream.conn.messages.get()
            name = event_name(message)
            if name == "audio_end":
                self.counts.replies_finished += 1
                self.stream.conn.send_chat(next(self.paragraphs))
            elif name == "error":
                self.counts.error_events += 1
            elif message.get("type") == "command" and message.get("pld", {}).get("code") != 1000:
                self.counts.failed_acks += 1

    def window(self, seconds: float) -> Reply:
        """Video and audio since the last window, then start a new one."""
        video = self.stream.window(seconds)
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(self.audio)]
        reply = {
            "fps": round(video["frames"] / seconds, 2),
            "video_gap_max_ms": round(max(video["intervals_ms"], default=0.0), 1),
            "video_gaps": sum(1 for gap in video["intervals_ms"] if gap > VIDEO_GAP_MS),
            "missing_frames": video["missing"],
            "audio_fps": round(len(self.audio) / seconds, 2),
            "audio_gap_max_ms": round(max(gaps, default=0.0), 1),
            "audio_gaps": sum(1 for gap in gaps if gap > AUDIO_GAP_MS),
            "sound_pct": round(100 * self.sound / max(len(self.audio), 1), 1),
        }
        self.stream.reset()
        self.audio.clear()
        self.sound = 0
        return reply

    async def fuzz(self, rng: random.Random, count: int) -> None:
        """`count` junk messages, then one real command whose ack must come."""
        for raw in rng.sample(FUZZ, min(count, len(FUZZ))):
            self.stream.conn.send_raw(raw)  # type: ignore[arg-type]  # bytes go out as binary messages
            self.counts.fuzz_sent += 1
        try:
            ack = await self.stream.conn.set_action(rng.choice(["nod", "shake"]))
            self.counts.acks_ok += ack["pld"]["code"] == 1000
        except TimeoutError:
            self.counts.acks_missing += 1

    async def aclose(self, api: LiveAvatarApi) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.stream.aclose(api)


async def join(args: argparse.Namespace, api: LiveAvatarApi, duration: int) -> Stream:
    """Create and join a session (server- or client-rendered, as `--render` says) once its first frame is in."""
    params = {**CREATE_PARAMS, "voice_id": args.voice}
    if args.render == "client":
        stream, _, _ = await join_client_rendered(api, duration=duration, **params)
    else:
        stream, _, _ = await join_session(api, duration=duration, **params)
    return stream


async def churn(args: argparse.Namespace, api: LiveAvatarApi, counts: Counts, rng: random.Random) -> None:
    """Create, join, fuzz and close a session every `--churn-every` seconds."""
    while True:
        await asyncio.sleep(args.churn_every)
        try:
            stream = await join(args, api, duration=120)
            try:
                for _ in range(10 if args.render == "server" else 0):
                    await asyncio.wait_for(stream.conn.video.get(), 5)
                for raw in rng.sample(FUZZ, 4):
                    stream.conn.send_raw(raw)  # type: ignore[arg-type]
                stream.conn.send_chat("A short hello from the churn loop.")
                ack = await asyncio.wait_for(stream.conn.interrupt(), ACK_TIMEOUT)
                assert ack["pld"]["code"] == 1000, ack
            finally:
                await stream.aclose(api)
            counts.churn_ok += 1
        except Exception as exc:  # counted and reported: the soak goes on
            counts.churn_failed += 1
            counts.churn_errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def soak(args: argparse.Namespace) -> Reply:
    rng = random.Random(args.seed)
    counts = Counts()
    with tempfile.TemporaryDirectory(prefix="liveavatar-soak-") as tmp:
        server = ServerProcess(Path(tmp), max_sessions=args.sessions + 4, workers=args.workers)
        await server.start()
        talkers: list[Talker] = []
        samples: list[Reply] = []
        background: list[asyncio.Task[None]] = []
        try:
            async with LiveAvatarApi(server.url, api_key=server.api_key) as api:
                # the talkers outlive the soak (their joins and the warm-up come before its clock starts)
                lifetime = int(args.minutes * 60) + 600
                for n in range(args.sessions):
                    stream = await join(args, api, lifetime)
                    paragraphs = itertools.cycle(PARAGRAPHS[n % len(PARAGRAPHS) :] + PARAGRAPHS[: n % len(PARAGRAPHS)])
                    talker = Talker(stream, counts, paragraphs)
                    talker.start()
                    talkers.append(talker)
                if args.churn_every > 0:
                    background.append(asyncio.create_task(churn(args, api, counts, rng), name="churn"))

                async def fuzz_all() -> None:
                    while True:
                        await asyncio.sleep(1.0)
                        await asyncio.gather(*(t.fuzz(rng, args.fuzz_per_second) for t in talkers))

                if args.fuzz_per_second > 0:
                    background.append(asyncio.create_task(fuzz_all(), name="fuzz"))
                start = time.monotonic()
                end = start + args.minutes * 60
                print(
                    f"{'t_s':>6} {'rss_mb':>8} {'anon_mb':>8} {'fps_min':>7} {'vgap_ms':>8} "
                    f"{'afps_min':>8} {'agap_ms':>8} "
                    f"{'errors':>6} {'acks':>6} {'missing':>7} {'churn':>9}"
                )
                while time.monotonic() < end:
                    await asyncio.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
                    windows = [t.window(args.sample_every) for t in talkers]
                    sample = {
                        "t_s": round(time.monotonic() - start, 1),
                        "rss_mb": round(rss_mb(server.pid), 1),
                        "anon_mb": round(rss_mb(server.pid, "RssAnon"), 1),
                        "sessions": windows,
                        **counts.totals(),
                    }
                    samples.append(sample)
                    print(
                        f"{sample['t_s']:>6.0f} {sample['rss_mb']:>8.1f} {sample['anon_mb']:>8.1f} "
                        f"{min(w['fps'] for w in windows):>7.1f} "
                        f"{max(w['video_gap_max_ms'] for w in windows):>8.0f} "
                        f"{min(w['audio_fps'] for w in windows):>8.1f} "
                        f"{max(w['audio_gap_max_ms'] for w in windows):>8.0f} "
                        f"{counts.error_events + counts.failed_acks:>6} {counts.acks_ok:>6} {counts.acks_missing:>7} "
                        f"{counts.churn_ok:>4}/{counts.churn_failed:<4}",
                        flush=True,
                    )
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                statuses = [int((await api.session(t.stream.session_id))["status"]) for t in talkers]
                for talker in talkers:
                    await talker.aclose(api)
                talkers.clear()
        finally:
            for task in background:
                task.cancel()
            for talker in talkers:
                with contextlib.suppress(Exception):
                    await talker.aclose(api)
            await server.aclose()
    return summarize(args, samples, counts, statuses)


def growth(start: float, end: float) -> float | None:
    """Percent change from start to end."""
    return round(100 * (end - start) / start, 2) if start else None


def thirds(warm: list[Reply]) -> Reply:
    """Mean RSS over the first and the last third of the samples after warm-up, and the growth between them.

    One sample can land inside a sentence's synthesis (tens of MB of tensors, freed right after) or between
    two: the means of many samples show a trend that first-vs-last can hide or invent.
    """
    third = max(1, len(warm) // 3)
    first = sum(s["rss_mb"] for s in warm[:third]) / third
    last = sum(s["rss_mb"] for s in warm[-third:]) / third
    return {
        "rss_first_third_mb": round(first, 1),
        "rss_last_third_mb": round(last, 1),
        "rss_trend_pct": growth(first, last),
    }


def summarize(args: argparse.Namespace, samples: list[Reply], counts: Counts, statuses: list[int]) -> Reply:
    """The run's figures: RSS after warm-up, continuity, errors."""
    warm = [s for s in samples if s["t_s"] >= args.warmup] or samples[-1:]
    rss_start, rss_end = warm[0]["rss_mb"], warm[-1]["rss_mb"]
    windows = [w for s in samples for w in s["sessions"]]
    return {
        "machine": machine_info(),
        "sessions": args.sessions,
        "render": args.render,
        "workers": args.workers,
        "voice": args.voice,
        "minutes": args.minutes,
        "churn_every_s": args.churn_every,
        "fuzz_per_second": args.fuzz_per_second,
        "rss_after_warmup_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "rss_growth_pct": growth(rss_start, rss_end),
        "anon_after_warmup_mb": warm[0]["anon_mb"],
        "anon_end_mb": warm[-1]["anon_mb"],
        "anon_growth_pct": growth(warm[0]["anon_mb"], warm[-1]["anon_mb"]),
        **thirds(warm),
        "fps_min": min(w["fps"] for w in windows),
        "video_gap_max_ms": max(w["video_gap_max_ms"] for w in windows),
        "video_gaps_over_200ms": sum(w["video_gaps"] for w in windows),
        "missing_frames": sum(w["missing_frames"] for w in windows),
        "audio_fps_min": min(w["audio_fps"] for w in windows),
        "audio_gap_max_ms": max(w["audio_gap_max_ms"] for w in windows),
        "audio_gaps_over_60ms": sum(w["audio_gaps"] for w in windows),
        **counts.totals(),
        "churn_errors": counts.churn_errors[:10],
        "final_statuses": statuses,
        "samples": samples,
    }


def format_summary(results: Reply) -> str:
    lines = [
        f"soak: {results['sessions']} talking {results['render']}-rendered sessions ({results['voice']}, "
        f"{results['workers']} workers) x {results['minutes']} min, churn every "
        f"{results['churn_every_s']} s, {results['fuzz_per_second']} junk messages/s per session",
        f"  RSS after warm-up {results['rss_after_warmup_mb']} MB -> end {results['rss_end_mb']} MB "
        f"({results['rss_growth_pct']} %), max {results['rss_max_mb']} MB; anonymous {results['anon_after_warmup_mb']} "
        f"-> {results['anon_end_mb']} MB ({results['anon_growth_pct']} %)",
        f"  RSS mean over the first third after warm-up {results['rss_first_third_mb']} MB, over the last third "
        f"{results['rss_last_third_mb']} MB ({results['rss_trend_pct']} %)",
        f"  video: min {results['fps_min']} fps per window, largest gap {results['video_gap_max_ms']} ms, "
        f"{results['video_gaps_over_200ms']} gaps > 200 ms, {results['missing_frames']} frames missing",
        f"  audio: min {results['audio_fps_min']} frames/s per window, largest gap {results['audio_gap_max_ms']} ms, "
        f"{results['audio_gaps_over_60ms']} gaps > 60 ms",
        f"  replies finished {results['replies_finished']}; junk sent {results['fuzz_sent']}, answered with "
        f"{results['error_events']} error events and {results['failed_acks']} failed acks",
        f"  real commands acked {results['acks_ok']}, unacked {results['acks_missing']}; churn cycles "
        f"{results['churn_ok']} ok, {results['churn_failed']} failed; final statuses {results['final_statuses']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--churn-every", type=float, default=10.0, help="seconds between churn cycles (0: none)")
    parser.add_argument("--fuzz-per-second", type=int, default=3, help="junk messages per session per second")
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline")
    parser.add_argument("--render", choices=("server", "client"), default="server", help="where the avatar is drawn")
    parser.add_argument("--workers", type=int, default=0, help="server worker processes [0: in the API process]")
    parser.add_argument("--voice", default=CREATE_PARAMS["voice_id"], help="voice of every session [Piper's]")
    parser.add_argument("--count-video", action="store_true", help="count video frames without decoding them")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "soak.json")
    args = parser.parse_args()
    if args.count_video:
        count_video_only()
    return run_bench(soak(args), args.output, format_summary)


if __name__ == "__main__":
    raise SystemExit(main())
