"""AKool client code in a real browser: the integration guide's Agora page, and LiveKit- and TRTC-style pages.

Each page is served by a small app backend on its own origin (it creates and closes sessions with its
API key, as the guide recommends) and imports liveavatar's compatibility client from the liveavatar
server: cross-origin module import, CORS preflights on the offer and the REST close, text/plain bodies.
Chromium's fake microphone plays recorded speech for the voice step.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page

from conftest import TIMEOUT_MS, Deployment, chromium, same_words
from servers import Server
from test_browser_voice import QUESTION, speech_wav

PAGES = Path(__file__).with_name("compat_pages")
CREATE = "/api/open/v4/liveAvatar/session/create"
CLOSE = "/api/open/v4/liveAvatar/session/close"
TRANSCRIPT = "/api/open/v4/liveAvatar/session/transcript"
SAID = "Hello from the guide's page. The avatar says exactly what it is sent."
INTERRUPTED = (
    "This answer is cut short on purpose. It goes on for a while so that the interrupt lands while the "
    "avatar is still speaking. Nobody should hear this last sentence at all."
)
SENTENCES = [
    "Streaming avatars let a web page talk with a person in real time.",
    "The browser sends text over a data channel and receives audio and video back.",
    "Long messages travel in small chunks that share one message id.",
    "The server joins the chunks in order before the avatar starts to speak.",
    "Every chunk stays under one kilobyte, as the original transport requires.",
    "The sender waits between chunks so that no more than six kilobytes go out each second.",
    "When the last chunk arrives, the avatar reads the whole text from the beginning.",
    "Each sentence is spoken with matching lip movements and a steady voice.",
]


def long_text(length: int = 3000) -> str:
    """`length` characters of plain English prose."""
    text = ""
    i = 0
    while len(text) < length:
        text += SENTENCES[i % len(SENTENCES)] + " "
        i += 1
    return text[:length].rstrip() + "." * (length - len(text[:length].rstrip()))


LONG = long_text()


def words(text: str) -> list[str]:
    """Lower-case words, for comparing speech recognition with what was said."""
    return re.findall(r"[a-z']+", text.lower())


def squeeze(text: str) -> str:
    """Whitespace-normalised text (the avatar's pieces are sentences joined by spaces)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def backend() -> str:
    """SQLite only."""
    return "sqlite"


@pytest.fixture(scope="module")
def deployment(make_server: Callable[..., Server]) -> Deployment:
    """A liveavatar server with the default CORS setting (any origin)."""
    return Deployment(make_server().start())


class AppBackend:
    """The app's own backend on another origin: serves the pages, creates and closes sessions with its key."""

    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url
        self.api_key = api_key
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the app."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                page = PAGES / self.path.lstrip("/")
                if page.parent != PAGES or page.suffix != ".html" or not page.exists():
                    self._reply(404, b"not found", "text/plain")
                    return
                html = page.read_text().replace("{{LIVEAVATAR}}", app.api_url).replace("{{API_KEY}}", app.api_key)
                self._reply(200, html.encode(), "text/html; charset=utf-8")

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
                headers = {"x-api-key": app.api_key}
                if self.path == "/api/avatar/create-session":
                    request = {"avatar_id": body["avatarId"], "duration": body.get("duration", 600)}
                    if "streamType" in body:
                        request["stream_type"] = body["streamType"]
                    request["voice_params"] = {"speed": 1.2}  # the app's choice: brisk speech
                    reply = httpx.post(app.api_url + CREATE, json=request, headers=headers).json()
                elif self.path == "/api/avatar/close-session":
                    reply = httpx.post(app.api_url + CLOSE, json={"id": body["sessionId"]}, headers=headers).json()
                else:
                    self._reply(404, b"not found", "text/plain")
                    return
                status = 200 if reply["code"] == 1000 else 502
                self._reply(status, json.dumps(reply["data"]).encode(), "application/json")

        return Handler

    def __enter__(self) -> AppBackend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def app(deployment: Deployment) -> Iterator[AppBackend]:
    """The app backend, holding alice's key."""
    with AppBackend(deployment.server.url, deployment.alice.key or "") as backend:
        yield backend


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recorded speech for the fake microphone."""
    return speech_wav(tmp_path_factory.mktemp("speech") / "question.wav", QUESTION)


@pytest.fixture
async def browser(question_wav: Path) -> AsyncIterator[Browser]:
    """Chromium whose fake microphone plays the question."""
    async with chromium([f"--use-file-for-fake-audio-capture={question_wav}"]) as browser:
        yield browser


class Console:
    """The page's console lines, for the guide's own `console.log('Avatar response:', answer)`."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, msg: ConsoleMessage) -> None:
        self.lines.append((msg.type, msg.text))
        if msg.type in ("error", "warning"):
            print(f"browser {msg.type}: {msg.text}")

    def after(self, prefix: str) -> list[str]:
        """The text after `prefix` of every log line that starts with it."""
        return [text[len(prefix) :] for kind, text in self.lines if kind == "log" and text.startswith(prefix)]

    async def wait(self, prefix: str, count: int, timeout: float) -> list[str]:
        """Wait until `count` lines start with `prefix`; all of them."""
        deadline = time.monotonic() + timeout
        while len(self.after(prefix)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:g} s for {count} x {prefix!r}; console: {self.lines[-20:]}")
            await asyncio.sleep(0.2)
        return self.after(prefix)

    def errors(self) -> list[str]:
        """Console errors the page reported."""
        return [text for kind, text in self.lines if kind == "error"]


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[tuple[Page, Console]]:
    """A page whose uncaught errors fail the test, with its console recorded."""
    page = await browser.new_page(viewport={"width": 1024, "height": 768})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    console = Console()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", console)
    yield page, console
    await page.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def video_plays(page: Page) -> dict[str, Any]:
    """Wait until the page's <video> shows the avatar with time advancing; its size."""
    await page.wait_for_function("document.querySelector('video') && document.querySelector('video').currentTime > 0")
    before = await page.evaluate("document.querySelector('video').currentTime")
    await page.wait_for_function(f"document.querySelector('video').currentTime > {before} + 0.5")
    size: dict[str, Any] = await page.evaluate(
        """(() => { const v = document.querySelector('video');
            return {w: v.videoWidth, h: v.videoHeight, paused: v.paused}; })()"""
    )
    return size


ACKS = "window.received.filter((r) => r.message.type === 'command' && r.message.pld.cmd === cmd)"


async def acks(page: Page, cmd: str, count: int = 1) -> list[dict[str, Any]]:
    """Wait for `count` acks of `cmd` among the messages the page received; their payloads."""
    await page.wait_for_function(f"([cmd, n]) => {ACKS}.length >= n", arg=[cmd, count])
    found: list[dict[str, Any]] = await page.evaluate(f"(cmd) => {ACKS}.map((r) => r.message.pld)", cmd)
    return found


async def heard_reply(deployment: Deployment, session_id: str, count: int) -> dict[str, Any]:
    """The server's record of the `count`-th reply (what the user heard of it), once it has ended."""
    for _ in range(300):
        transcript = (await asyncio.to_thread(deployment.alice.get, TRANSCRIPT, id=session_id))["data"]
        bots = [m for m in transcript["messages"] if m["from"] == "bot"]
        if len(bots) >= count:
            reply: dict[str, Any] = bots[count - 1]
            return reply
        await asyncio.sleep(0.1)
    raise AssertionError(f"no reply {count} in {transcript}")


async def wait_closed(deployment: Deployment, session_id: str) -> None:
    """Wait until the REST API reports the session closed (status 3)."""
    for _ in range(100):
        if (await asyncio.to_thread(deployment.alice.session, session_id))["data"]["status"] == 3:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} was not closed")


async def heard_question(console: Console) -> None:
    """The guide's handler logged the transcript of the fake microphone's question."""
    lines = await console.wait("User message: ", 1, timeout=60)
    assert any(same_words(words(line), words(QUESTION)) for line in lines), lines


@pytest.mark.timeout(600)
async def test_agora_integration_guide_page(
    page: tuple[Page, Console], app: AppBackend, deployment: Deployment
) -> None:
    tab, console = page
    await tab.goto(f"{app.url}/agora.html")
    await tab.wait_for_function("window.ready === true")

    # Steps 1-4: session from the backend, join with the agora_* credentials, subscribe, message handler.
    session = await tab.evaluate(
        """async () => {
            window.session = await guide.createSessionFromBackend();
            const t0 = performance.now();
            window.client = await guide.initializeAgoraClient(session.credentials);
            window.joinMs = performance.now() - t0;
            await guide.subscribeToAvatarStream(client);
            guide.setupMessageHandlers(client);
            guide.record(client);
            return window.session;
        }"""
    )
    assert session["stream_type"] == "agora"
    assert await video_plays(tab) == {"w": 512, "h": 512, "paused": False}
    print(f"Agora compat client: join (offer, answer, data channel open) in {await tab.evaluate('joinMs'):.0f} ms")
    assert await tab.evaluate("client.connectionState") == "CONNECTED"
    assert await tab.evaluate("client.remoteUsers.map((u) => [u.uid, u.hasAudio, u.hasVideo, !!u.audioTrack])") == [
        [1, True, True, True]
    ]

    # Step 5: a chat is answered; the handler's `answer` is what the avatar said (retelling mode).
    await tab.evaluate("(text) => guide.sendMessageToAvatar(client, 'msg-hello', text)", SAID)
    answers = await console.wait("Avatar response: ", 1, timeout=60)
    assert squeeze(answers[0]) == squeeze(SAID)
    assert squeeze((await heard_reply(deployment, session["_id"], 1))["text"]) == squeeze(answers[0])
    received = await tab.evaluate("window.received.filter((r) => r.message.type === 'chat')")
    assert all(r["isBytes"] and r["uid"] == 1 for r in received)

    # A 3,000-character message, sent with the guide's chunking (950-byte chunks at 6 KB/s), is spoken in full.
    started = time.monotonic()
    await tab.evaluate("(text) => guide.sendMessageToAvatar(client, 'msg-long', text)", LONG)
    chunks = console.after("Splitting message into ")
    assert len(LONG) == 3000 and chunks[-1].startswith(tuple(f"{n} chunks" for n in range(4, 40))), chunks
    answers = await console.wait("Avatar response: ", 2, timeout=420)
    print(f"3,000 characters spoken in {time.monotonic() - started:.0f} s")
    assert squeeze(answers[1]) == squeeze(LONG)
    heard = await heard_reply(deployment, session["_id"], 2)
    assert squeeze(heard["text"]) == squeeze(LONG) and not heard["interrupted"]

    # Step 6: interrupt (while the avatar speaks) and set-params are acknowledged with 1000.
    pieces = "window.received.filter((r) => r.message.type === 'chat' && r.message.pld.text).length"
    before = await tab.evaluate(pieces)
    await tab.evaluate("(text) => guide.sendMessageToAvatar(client, 'msg-cut', text)", INTERRUPTED)
    await tab.wait_for_function(f"{pieces} > {before}", timeout=30_000)  # the first sentence is playing
    await tab.evaluate("guide.interruptAvatar(client)")
    assert [(a["code"], a["msg"]) for a in await acks(tab, "interrupt")] == [(1000, "OK")]
    answers = await console.wait("Avatar response: ", 3, timeout=30)
    assert len(squeeze(answers[2])) < len(squeeze(INTERRUPTED))
    assert (await heard_reply(deployment, session["_id"], 3))["interrupted"] is True
    await tab.evaluate("guide.setAvatarParams(client, {mode: 1})")
    await acks(tab, "set-params", 1)
    await tab.evaluate("guide.setAvatarParams(client, {lang: 'en'})")
    assert [a["code"] for a in await acks(tab, "set-params", 2)] == [1000, 1000]

    # Agora's limits hold: over 1 KB is refused, faster than 6 KB/s waits (v1 messages: ignored by the server).
    oversize = await tab.evaluate(
        "client.sendStreamMessage('x'.repeat(1025), false).then(() => null, (e) => [e.name, e.code])"
    )
    assert oversize == ["AgoraRTCException", "INVALID_PARAMS"]
    paced_ms = await tab.evaluate(
        """async () => {
            const filler = JSON.stringify({v: 1, pad: 'x'.repeat(990)});
            const t0 = performance.now();
            for (let i = 0; i < 8; i++) await client.sendStreamMessage(filler, false);
            return performance.now() - t0;
        }"""
    )
    assert paced_ms >= 900, paced_ms  # 8 KB at 6 KB/s

    # Stats, network quality and the demo's device calls.
    await tab.evaluate("client.on('network-quality', (q) => { window.quality = q; })")
    await tab.wait_for_function("window.quality !== undefined", timeout=10_000)
    stats = await tab.evaluate(
        "({rtc: client.getRTCStats(), video: client.getRemoteVideoStats()[1], audio: client.getRemoteAudioStats()[1],"
        " quality: window.quality, cameras: 0})"
    )
    assert stats["video"]["receiveResolutionWidth"] == 512 and stats["video"]["receiveFrameRate"] > 0, stats
    assert stats["audio"]["receiveBitrate"] > 0 and stats["rtc"]["RecvBytes"] > 0 and stats["rtc"]["UserCount"] == 2
    assert 1 <= stats["quality"]["downlinkNetworkQuality"] <= 5, stats
    cameras = await tab.evaluate("guide.AgoraRTC.getCameras().then((c) => c.length)")
    assert cameras >= 1
    await tab.evaluate("guide.AgoraRTC.registerExtensions([{name: 'AIDenoiser'}])")

    # Step 7: the microphone is published and what the user says is transcribed.
    await tab.evaluate(
        """async () => {
            const controls = await guide.setupAudioInteraction(client);
            guide.setAudioControls(controls);
            await controls.startAudio();
            window.controls = controls;
        }"""
    )
    await heard_question(console)
    await tab.evaluate("controls.toggleAudio(true); controls.toggleAudio(false)")

    # Step 9: cleanup from the browser (cross-origin, x-api-key, a text/plain JSON body) and leave.
    await tab.evaluate("guide.cleanupInBrowser(client, session._id)")
    await wait_closed(deployment, session["_id"])
    assert await tab.evaluate("client.connectionState") == "DISCONNECTED"
    assert not [e for e in console.errors() if "Command failed" in e or "Error" in e], console.errors()


@pytest.mark.timeout(300)
async def test_livekit_style_page(page: tuple[Page, Console], app: AppBackend, deployment: Deployment) -> None:
    tab, console = page
    await tab.goto(f"{app.url}/livekit.html")
    await tab.wait_for_function("window.ready === true")
    session = await tab.evaluate(
        """async () => {
            window.session = await page.createSession();
            window.room = await page.initializeLiveKitRoom(session.credentials);
            page.setupMessageHandlers(room);
            page.record(room);
            return window.session;
        }"""
    )
    assert session["stream_type"] == "livekit"
    assert await video_plays(tab) == {"w": 512, "h": 512, "paused": False}
    assert await tab.evaluate("[room.state, room.name, [...room.remoteParticipants.keys()]]") == [
        "connected",
        session["_id"],
        ["avatar"],
    ]

    await tab.evaluate("(text) => page.sendMessageToAvatar(room, text)", SAID)
    answers = await console.wait("Avatar response: ", 1, timeout=60)
    assert squeeze(answers[0]) == squeeze(SAID)
    assert squeeze((await heard_reply(deployment, session["_id"], 1))["text"]) == squeeze(answers[0])

    await tab.evaluate("page.sendCommand(room, 'interrupt')")
    assert [a["code"] for a in await acks(tab, "interrupt")] == [1000]
    await tab.evaluate("page.sendCommand(room, 'set-params', {lang: 'en'})")
    assert [a["code"] for a in await acks(tab, "set-params")] == [1000]

    # LiveKit's reliable limit: 15 KiB per message.
    too_big = await tab.evaluate(
        "room.localParticipant.publishData(new Uint8Array(15 * 1024 + 1)).then(() => null, (e) => e.message)"
    )
    assert too_big is not None and "15360" in too_big

    enabled = await tab.evaluate(
        "room.localParticipant.setMicrophoneEnabled(true).then(() => room.localParticipant.isMicrophoneEnabled)"
    )
    assert enabled is True
    await heard_question(console)

    await tab.evaluate("page.cleanup(room, session._id)")
    await wait_closed(deployment, session["_id"])
    assert await tab.evaluate("room.state") == "disconnected"
    assert not [e for e in console.errors() if "Command failed" in e], console.errors()


@pytest.mark.timeout(300)
async def test_trtc_style_page(page: tuple[Page, Console], app: AppBackend, deployment: Deployment) -> None:
    tab, console = page
    await tab.goto(f"{app.url}/trtc.html")
    await tab.wait_for_function("window.ready === true")
    session = await tab.evaluate(
        """async () => {
            window.session = await page.createSession();
            window.trtc = await page.initializeTRTC(session.credentials);
            page.setupMessageHandlers(trtc);
            page.record(trtc);
            return window.session;
        }"""
    )
    assert session["stream_type"] == "trtc"
    assert await video_plays(tab) == {"w": 512, "h": 512, "paused": False}
    assert await tab.evaluate("!!document.querySelector('#avatar video')")
    await console.wait("Remote audio available: ", 1, timeout=10)

    await tab.evaluate("(text) => page.sendMessageToAvatar(trtc, text)", SAID)
    answers = await console.wait("Avatar response: ", 1, timeout=60)
    assert squeeze(answers[0]) == squeeze(SAID)
    assert squeeze((await heard_reply(deployment, session["_id"], 1))["text"]) == squeeze(answers[0])
    assert await tab.evaluate("window.received.every((r) => r.isBuffer)")

    await tab.evaluate("page.sendCommand(trtc, 'interrupt')")
    assert [a["code"] for a in await acks(tab, "interrupt")] == [1000]
    await tab.evaluate("page.sendCommand(trtc, 'set-params', {mode: 1})")
    assert [a["code"] for a in await acks(tab, "set-params")] == [1000]

    # TRTC's limits: 1 KB per message is refused beyond, 30 messages per second wait their turn.
    refused = await tab.evaluate(
        """(() => { try { trtc.sendCustomMessage({cmdId: 1, data: new Uint8Array(1025).buffer}); return null; }
                    catch (e) { return [e.name, e.code]; } })()"""
    )
    assert refused == ["RtcError", 5000]
    paced_ms = await tab.evaluate(
        """async () => {
            const data = new TextEncoder().encode(JSON.stringify({v: 1})).buffer;
            const t0 = performance.now();
            for (let i = 0; i < 40; i++) await trtc.sendCustomMessage({cmdId: 1, data});
            return performance.now() - t0;
        }"""
    )
    assert paced_ms >= 900, paced_ms  # 40 messages at 30 per second

    # The demo's calls: plugins and volume evaluation are accepted; the microphone is heard.
    await tab.evaluate(
        """async () => {
            await trtc.startPlugin('AIDenoiser', {assetsPath: '/'});
            trtc.on(page.TRTC.EVENT.AUDIO_VOLUME, (e) => { window.volumes = e.result; });
            trtc.enableAudioVolumeEvaluation(500);
            await trtc.startLocalAudio();
        }"""
    )
    await tab.wait_for_function("window.volumes && window.volumes.length === 2", timeout=10_000)
    await heard_question(console)
    await tab.evaluate("trtc.updateLocalAudio({mute: true})")

    await tab.evaluate("page.cleanup(trtc, session._id)")
    await wait_closed(deployment, session["_id"])
    assert not [e for e in console.errors() if "Command failed" in e], console.errors()
