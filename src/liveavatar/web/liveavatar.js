// liveavatar browser client: join a liveavatar session over WebRTC, show the avatar, talk to it.
//
// A plain ES module with no dependencies and no build step:
//
//   import { LiveAvatarSession } from "/web/liveavatar.js";
//   const session = new LiveAvatarSession();
//   session.on("track", ({ stream }) => { video.srcObject = stream; });
//   session.on("bot-text", ({ mid, text, fin }) => render(mid, text, fin));
//   await session.connect(credentials);          // `credentials` from session/create
//   await session.chat("Hello there!");
//   const ack = await session.setParams({ lang: "en" });   // resolves with the ack's pld
//   session.close();
//
// Events (every payload is one object):
//   "connection-state" {state, previous, reason?}  state: new | connecting | connected | disconnected
//                      (may recover) | failed | closed; when closed, reason is "local" (close()) or
//                      "remote" (the server ended the session)
//   "track"            {track, stream}    stream: the one remote MediaStream (audio + video) for a <video>
//   "stream-message"   {message, raw}     every parsed v2 message from the avatar (raw: the JSON text)
//   "bot-text"         {mid, text, delta, fin}  the avatar's answer so far, assembled by mid
//   "user-text"        {mid, text, delta, fin}  the transcript of the user's speech, assembled by mid
//   "command-ack"      {mid, cmd, code, msg}
//   "audio-start" {}, "audio-end" {}     the avatar starts / stops speaking
//   "error"            {code, msg}        an error event from the avatar (e.g. a malformed chat message)
//   "microphone"       {enabled}
//   "avatar-canvas"    {canvas}           render: "client" only: the <canvas> the avatar is drawn in
//   "animation-hello"  {avatarId, info}   render: "client" only: the animation stream (re)started
//
// Client rendering (a liveavatar extension): create the session with render: "client" and connect with
// {render: "client"} (optionally {canvas}); the avatar is then drawn in the browser with WebGL2 from its web
// pack, in step with the audio, and the server sends no video. Check clientRenderSupported() first and
// create a server-rendered session where it is false.
//
// The REST helpers at the end are for demos and tests only: in production your backend holds the API
// key, creates the session and hands the browser nothing but `credentials`.

import { ANIMATION_LABEL } from "./animation.js";
import { ClientRender, clientRenderSupported } from "./client-render.js";

export { clientRenderSupported };

const VERSION = 2;
const encoder = new TextEncoder();

/** Data-channel limits per transport; a message's size is its whole serialized JSON in UTF-8 bytes. */
export const PROFILES = Object.freeze({
  agora: Object.freeze({ name: "agora", maxMessageBytes: 1024, maxBytesPerSecond: 6 * 1024 }),
  trtc: Object.freeze({ name: "trtc", maxMessageBytes: 1024, maxBytesPerSecond: 8 * 1024, maxMessagesPerSecond: 30 }),
  livekit: Object.freeze({ name: "livekit", maxMessageBytes: 15 * 1024 }),
  webrtc: Object.freeze({ name: "webrtc", maxMessageBytes: 15 * 1024 }),
});

/** An error with the API's response code (`code`) and reason (`msg`). */
export class LiveAvatarError extends Error {
  /**
   * @param {number} code response code (1000 is success; -1: no answer from the server)
   * @param {string} msg the server's reason
   * @param {object} [detail] extra context (e.g. the failed ack)
   */
  constructor(code, msg, detail = {}) {
    super(msg ? `${msg} (code ${code})` : `code ${code}`);
    this.name = "LiveAvatarError";
    this.code = code;
    this.msg = msg;
    Object.assign(this, detail);
  }
}

/** A minimal event emitter: on / off / once / emit. */
export class Emitter {
  #listeners = new Map();

  /**
   * Call `listener(payload)` on every `type` event.
   * @returns {() => void} a function that removes the listener
   */
  on(type, listener) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  /** Remove a listener added with `on` or `once`. */
  off(type, listener) {
    const set = this.#listeners.get(type);
    if (!set) return;
    set.delete(listener);
    for (const entry of set) if (entry.original === listener) set.delete(entry);
  }

  /** Call `listener` on the next `type` event only. */
  once(type, listener) {
    const wrapper = (payload) => {
      this.off(type, wrapper);
      listener(payload);
    };
    wrapper.original = listener;
    return this.on(type, wrapper);
  }

  /** Call every listener of `type`; a listener that throws is reported and does not stop the others. */
  emit(type, payload = {}) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(payload);
      } catch (err) {
        console.error(`liveavatar: "${type}" listener failed`, err);
      }
    }
  }
}

// --- stream messages --------------------------------------------------------------------------------

/** UTF-8 size of a string in bytes. */
export function byteLength(text) {
  return encoder.encode(text).length;
}

/** A new random message id (works outside secure contexts too). */
export function newMid() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function chatMessage(mid, idx, fin, text) {
  return { v: VERSION, type: "chat", mid, idx, fin, pld: { text } };
}

/**
 * Split `text` into serialized chat chunks (same mid, idx from 0, fin on the last), each at most
 * `maxBytes` UTF-8 bytes of JSON. Splits only between characters (code points): the chunks' texts
 * concatenate to `text` exactly. Throws when `mid` leaves no room for a single character.
 * @param {string} mid
 * @param {string} text
 * @param {number} [maxBytes]
 * @returns {string[]}
 */
export function splitChat(mid, text, maxBytes = PROFILES.webrtc.maxMessageBytes) {
  const chars = Array.from(text);
  // JSON escaping is per character, so a chunk's size is its envelope plus the sum of these.
  const costs = chars.map((ch) => byteLength(JSON.stringify(ch)) - 2);
  let remaining = costs.reduce((a, b) => a + b, 0);
  const envelope = (idx, fin) => byteLength(JSON.stringify(chatMessage(mid, idx, fin, "")));
  const out = [];
  for (let pos = 0, idx = 0; ; idx++) {
    if (envelope(idx, true) + remaining <= maxBytes) {
      out.push(JSON.stringify(chatMessage(mid, idx, true, chars.slice(pos).join(""))));
      return out;
    }
    const budget = maxBytes - envelope(idx, false);
    let end = pos;
    let used = 0;
    while (end < chars.length && used + costs[end] <= budget) used += costs[end++];
    if (end === pos) throw new LiveAvatarError(1003, `chat mid leaves no room for text within ${maxBytes} bytes`);
    out.push(JSON.stringify(chatMessage(mid, idx, false, chars.slice(pos, end).join(""))));
    remaining -= used;
    pos = end;
  }
}

/** Sends serialized messages within a profile's rate limits; commands go ahead of queued chat. */
class Outbox {
  #send;
  #profile;
  #control = [];
  #chat = [];
  #sent = []; // [time ms, bytes] of sends in the last second
  #timer = null;

  constructor(send, profile) {
    this.#send = send;
    this.#profile = profile;
  }

  /** Queue one message; resolves once it has been handed to the data channel. */
  push(encoded, { control = false } = {}) {
    const size = byteLength(encoded);
    if (size > this.#profile.maxMessageBytes) {
      return Promise.reject(
        new LiveAvatarError(1003, `${size}-byte message exceeds ${this.#profile.name}'s ${this.#profile.maxMessageBytes} bytes`),
      );
    }
    return new Promise((resolve, reject) => {
      (control ? this.#control : this.#chat).push({ encoded, size, resolve, reject });
      this.#pump();
    });
  }

  /** Drop everything queued; their promises reject with `reason`. */
  clear(reason) {
    clearTimeout(this.#timer);
    this.#timer = null;
    for (const item of [...this.#control.splice(0), ...this.#chat.splice(0)]) item.reject(reason);
  }

  #pump() {
    if (this.#timer !== null) return;
    for (;;) {
      const queue = this.#control.length ? this.#control : this.#chat;
      const head = queue[0];
      if (!head) return;
      const now = performance.now();
      const wait = this.#delay(head.size, now);
      if (wait > 0) {
        this.#timer = setTimeout(() => {
          this.#timer = null;
          this.#pump();
        }, wait);
        return;
      }
      queue.shift();
      try {
        this.#send(head.encoded);
        this.#sent.push([now, head.size]);
        head.resolve();
      } catch (err) {
        head.reject(err);
      }
    }
  }

  #delay(size, now) {
    const { maxBytesPerSecond: maxBytes, maxMessagesPerSecond: maxCount } = this.#profile;
    if (!maxBytes && !maxCount) return 0;
    while (this.#sent.length && now - this.#sent[0][0] >= 1000) this.#sent.shift();
    const bytes = this.#sent.reduce((sum, [, n]) => sum + n, 0);
    const overBytes = maxBytes ? bytes + size - maxBytes : 0;
    const overCount = maxCount ? this.#sent.length + 1 - maxCount : 0;
    if (overBytes <= 0 && overCount <= 0) return 0;
    let freed = 0;
    for (let i = 0; i < this.#sent.length; i++) {
      freed += this.#sent[i][1];
      if (freed >= overBytes && i + 1 >= overCount) return this.#sent[i][0] + 1000 - now + 1;
    }
    return 1000;
  }
}

// --- the session ------------------------------------------------------------------------------------

const DEFAULT_AUDIO_PROCESSING = Object.freeze({ echoCancellation: true, noiseSuppression: true, autoGainControl: true });

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onState);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onState = () => pc.iceGatheringState === "complete" && done();
    const onCandidate = (event) => !event.candidate && done();
    // Non-trickle: whatever has been gathered by then goes into the offer.
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", onState);
    pc.addEventListener("icecandidate", onCandidate);
  });
}

function fetchError(err) {
  return new LiveAvatarError(-1, `cannot reach the server (${err.message || err})`);
}

/**
 * One avatar session seen from the browser: the peer connection, the remote media, the data channel.
 * See the top of this file for its events.
 */
export class LiveAvatarSession extends Emitter {
  /** @type {RTCPeerConnection|null} */
  pc = null;
  /** @type {RTCDataChannel|null} */
  channel = null;
  /** The remote audio + video, for a <video> element's srcObject. */
  remoteStream = new MediaStream();
  /** new | connecting | connected | disconnected | failed | closed */
  state = "new";
  /** performance.now() marks: offerCreated, offerPosted, answerReceived, connected, channelOpen. */
  timings = {};

  #options;
  #profile = PROFILES.webrtc;
  #outbox = null;
  #pendingAcks = new Map();
  #incoming = new Map(); // mid -> text so far, for bot and user chat
  #audioTransceiver = null;
  #videoTransceiver = null;
  #microphone = null; // {track, stream} while capturing
  #camera = null;
  #lastStats = null;
  #clientRender = null;

  /**
   * @param {object} [options]
   * @param {number} [options.ackTimeoutMs=10000] how long a command waits for its ack
   * @param {number} [options.iceGatheringTimeoutMs=2000] how long to gather ICE candidates before the offer goes
   * @param {number} [options.connectTimeoutMs=20000] how long connect() waits for the data channel to open
   * @param {{echoCancellation?: boolean, noiseSuppression?: boolean, autoGainControl?: boolean}} [options.audioProcessing]
   *   microphone processing (all on by default; turn off for test signals)
   */
  constructor(options = {}) {
    super();
    this.#options = {
      ackTimeoutMs: 10000,
      iceGatheringTimeoutMs: 2000,
      connectTimeoutMs: 20000,
      ...options,
      audioProcessing: { ...DEFAULT_AUDIO_PROCESSING, ...(options.audioProcessing || {}) },
    };
  }

  /** The data-channel profile in use (PROFILES entry). */
  get profile() {
    return this.#profile;
  }

  /** Whether the microphone is being captured and sent. */
  get microphoneEnabled() {
    return this.#microphone !== null;
  }

  /** Whether the microphone can be turned on without reconnecting (joined with microphone true or "muted"). */
  get microphoneAvailable() {
    return this.#audioTransceiver !== null && this.#audioTransceiver.direction === "sendrecv";
  }

  /**
   * Join the session: offer, answer, and wait until the data channel is open.
   * @param {{webrtc_url: string, webrtc_token: string, ice_servers?: RTCIceServer[]}} credentials from session/create
   * @param {object} [options]
   * @param {boolean|"muted"} [options.microphone=false] true: capture and send the microphone now;
   *   "muted": keep a send slot so that setMicrophone(true) works later, capture nothing yet;
   *   false: receive only (setMicrophone(true) then needs a new connection)
   * @param {boolean|"muted"} [options.camera=false] true: send the camera as a video track (for "vision");
   *   "muted": keep a send slot for setCameraTrack() later; false: no camera
   * @param {string|object} [options.profile="webrtc"] data-channel limits: a PROFILES key or an object like its entries
   * @param {"server"|"client"} [options.render="server"] "client": draw the avatar in the browser (the session
   *   must have been created with render: "client"); opens the `liveavatar-animation` channel
   * @param {HTMLCanvasElement} [options.canvas] render "client": draw here (default: a new canvas, see "avatar-canvas")
   * @returns {Promise<void>}
   */
  async connect(credentials, { microphone = false, camera = false, profile = "webrtc", render = "server", canvas = null } = {}) {
    if (this.pc) throw new Error("liveavatar: this session is already connected; create a new LiveAvatarSession");
    if (!credentials || !credentials.webrtc_url || !credentials.webrtc_token) {
      throw new LiveAvatarError(1003, "credentials need webrtc_url and webrtc_token (stream_type webrtc)");
    }
    const limits = typeof profile === "string" ? PROFILES[profile] : { name: "custom", ...profile };
    if (!limits || !(limits.maxMessageBytes > 0)) throw new LiveAvatarError(1003, `unknown profile ${profile}`);
    this.#profile = limits;
    if (render === "client" && !clientRenderSupported()) {
      throw new LiveAvatarError(1003, 'this browser cannot draw the avatar (no WebGL2): create the session with render: "server"');
    }
    this.#setState("connecting");
    try {
      await this.#negotiate(credentials, { microphone, camera, render, canvas });
    } catch (err) {
      this.#teardown();
      this.#setState(this.state === "closed" ? "closed" : "failed");
      throw err;
    }
  }

  /** render "client": what draws the avatar (its `canvas`, `stats`, `state`); null otherwise. */
  get clientRender() {
    return this.#clientRender;
  }

  #openAnimation(pc, credentials, canvas) {
    const target = canvas || document.createElement("canvas");
    const render = new ClientRender({
      canvas: target,
      baseUrl: new URL(credentials.webrtc_url, location.href).origin,
      headers: { authorization: `Bearer ${credentials.webrtc_token}` },
      receiver: () => (this.#audioTransceiver ? this.#audioTransceiver.receiver : null),
      onError: (err) => this.emit("error", { code: -1, msg: `client rendering: ${err.message}` }),
      onHello: (hello) => this.emit("animation-hello", { avatarId: hello.info.avatar_id, info: hello.info }),
    });
    this.#clientRender = render;
    const channel = pc.createDataChannel(ANIMATION_LABEL, { ordered: true });
    channel.binaryType = "arraybuffer";
    channel.addEventListener("message", (event) => {
      if (event.data instanceof ArrayBuffer) render.handle(event.data);
    });
    this.emit("avatar-canvas", { canvas: target });
  }

  async #negotiate(credentials, { microphone, camera, render = "server", canvas = null }) {
    const pc = new RTCPeerConnection({ iceServers: credentials.ice_servers || [] });
    this.pc = pc;
    pc.addEventListener("track", (event) => {
      this.remoteStream.addTrack(event.track);
      this.emit("track", { track: event.track, stream: this.remoteStream });
    });
    pc.addEventListener("connectionstatechange", () => {
      const s = pc.connectionState;
      if (s === "connected") this.timings.connected ??= performance.now();
      // "disconnected" may heal by itself (ICE restarts on a flaky network); "failed" does not.
      if (this.state !== "closed" && ["connected", "disconnected", "failed"].includes(s)) this.#setState(s);
    });

    if (microphone === true) await this.#startMicrophone();
    const micTrack = this.#microphone ? this.#microphone.track : null;
    this.#audioTransceiver = pc.addTransceiver(micTrack || "audio", {
      direction: microphone ? "sendrecv" : "recvonly",
      streams: micTrack ? [this.#microphone.stream] : [],
    });
    if (camera === true) {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      this.#camera = { track: stream.getVideoTracks()[0], stream };
    }
    this.#videoTransceiver = pc.addTransceiver(this.#camera ? this.#camera.track : "video", {
      direction: camera ? "sendrecv" : "recvonly",
      streams: this.#camera ? [this.#camera.stream] : [],
    });

    // The data channel must exist before the offer so that the offer carries its m-line.
    const channel = pc.createDataChannel("liveavatar", { ordered: true });
    if (render === "client") this.#openAnimation(pc, credentials, canvas);
    this.channel = channel;
    this.#outbox = new Outbox((text) => channel.send(text), this.#profile);
    channel.addEventListener("message", (event) => this.#onMessage(event.data));
    channel.addEventListener("close", () => {
      // The channel cannot reopen without a new offer: the server ended the session (closed by the
      // backend, duration over, server shutting down).
      if (this.state === "closed" || this.state === "failed") return;
      this.#setState("closed", "remote");
      this.#teardown();
    });
    const opened = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new LiveAvatarError(1218, "timed out waiting for the connection")),
        this.#options.connectTimeoutMs,
      );
      channel.addEventListener("open", () => {
        clearTimeout(timer);
        this.timings.channelOpen = performance.now();
        resolve();
      });
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed" || pc.connectionState === "closed") {
          clearTimeout(timer);
          reject(new LiveAvatarError(1218, `connection ${pc.connectionState}`));
        }
      });
    });
    opened.catch(() => {}); // handled below; avoid an unhandled rejection while we negotiate

    this.timings.offerCreated = performance.now();
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, this.#options.iceGatheringTimeoutMs);
    const offer = pc.localDescription;
    this.timings.offerPosted = performance.now();
    let response;
    try {
      response = await fetch(credentials.webrtc_url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${credentials.webrtc_token}` },
        body: JSON.stringify({ sdp: offer.sdp, type: offer.type }),
      });
    } catch (err) {
      throw fetchError(err);
    }
    const answer = await readEnvelope(response);
    this.timings.answerReceived = performance.now();
    if (this.state === "closed") throw new LiveAvatarError(1219, "closed while connecting");
    await pc.setRemoteDescription({ type: answer.type || "answer", sdp: answer.sdp });
    await opened;
  }

  /**
   * Send one raw stream message. `v: 2` is added when missing; a chat message without mid, idx or fin
   * gets a new mid, idx 0 and fin true. A whole chat message (idx 0, fin) whose text is too long for the
   * profile is split into chunks; anything else must fit as it is.
   * @param {object} message e.g. {type: "chat", mid, idx: 0, fin: true, pld: {text}}
   * @returns {Promise<void>} resolves when every piece has been handed to the data channel
   */
  sendStreamMessage(message) {
    if (!this.channel || this.channel.readyState !== "open") {
      return Promise.reject(new LiveAvatarError(1219, "the session is not connected"));
    }
    const msg = { v: VERSION, ...message };
    if (msg.type === "chat") {
      msg.mid ??= newMid();
      msg.idx ??= 0;
      msg.fin ??= true;
    }
    const encoded = JSON.stringify(msg);
    if (msg.type === "chat" && byteLength(encoded) > this.#profile.maxMessageBytes && msg.idx === 0 && msg.fin) {
      const chunks = splitChat(msg.mid, (msg.pld && msg.pld.text) || "", this.#profile.maxMessageBytes);
      return Promise.all(chunks.map((chunk) => this.#outbox.push(chunk)));
    }
    return this.#outbox.push(encoded, { control: msg.type === "command" });
  }

  /**
   * Send text for the avatar to speak (retelling) or answer (dialogue), chunked to fit the profile.
   * @param {string} text
   * @returns {Promise<{mid: string}>} resolves once every chunk is on its way
   */
  async chat(text) {
    const mid = newMid();
    await this.sendStreamMessage(chatMessage(mid, 0, true, text));
    return { mid };
  }

  /**
   * Send a command and wait for its ack.
   * @param {string} cmd interrupt | set-params | set-action
   * @param {object} [data]
   * @returns {Promise<{cmd: string, code: number, msg: string}>} the ack's pld (code 1000);
   *   rejects with a LiveAvatarError carrying the ack's code and msg otherwise, or on timeout
   */
  async sendCommand(cmd, data) {
    const mid = newMid();
    const pld = data === undefined ? { cmd } : { cmd, data };
    const acked = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pendingAcks.delete(mid);
        reject(new LiveAvatarError(1218, `no ack for ${cmd} within ${this.#options.ackTimeoutMs} ms`, { mid }));
      }, this.#options.ackTimeoutMs);
      this.#pendingAcks.set(mid, { resolve, reject, timer });
    });
    try {
      await this.sendStreamMessage({ type: "command", mid, pld });
    } catch (err) {
      const pending = this.#pendingAcks.get(mid);
      if (pending) clearTimeout(pending.timer);
      this.#pendingAcks.delete(mid);
      throw err;
    }
    return acked;
  }

  /** Stop the avatar's current answer now. @returns {Promise<object>} the ack */
  interrupt() {
    return this.sendCommand("interrupt");
  }

  /**
   * Change session settings; empty fields are left out.
   * @param {{lang?: string, mode?: 1|2, bgurl?: string, vparams?: object, vid?: string, vurl?: string}} params
   * @returns {Promise<object>} the ack
   */
  setParams(params) {
    return this.sendCommand("set-params", compact(params));
  }

  /**
   * Play a gesture and/or show a facial expression.
   * @param {{action?: string, expression?: string}} params
   * @returns {Promise<object>} the ack
   */
  setAction({ action, expression } = {}) {
    return this.sendCommand("set-action", compact({ action, expression }));
  }

  /**
   * Turn the microphone on (capture with the configured audio processing and send it) or off (stop
   * capturing: the browser's recording indicator goes off). Needs a connection made with
   * `microphone: true` or `"muted"`.
   * @param {boolean} enabled
   * @returns {Promise<boolean>} whether the microphone is now on
   */
  async setMicrophone(enabled) {
    if (!this.microphoneAvailable) {
      throw new LiveAvatarError(1009, 'this session was joined without a microphone slot: connect with microphone true or "muted"');
    }
    if (enabled && !this.#microphone) {
      await this.#startMicrophone();
      await this.#audioTransceiver.sender.replaceTrack(this.#microphone.track);
    } else if (!enabled && this.#microphone) {
      await this.#audioTransceiver.sender.replaceTrack(null);
      this.#stopMicrophone();
    }
    this.emit("microphone", { enabled: this.microphoneEnabled });
    return this.microphoneEnabled;
  }

  /**
   * Send a track the caller captured (e.g. with its own getUserMedia constraints) as the microphone, or
   * stop sending with null. The session never stops a track given here: its owner does. Needs a
   * connection made with `microphone: true` or `"muted"`.
   * @param {MediaStreamTrack|null} track
   */
  async setMicrophoneTrack(track) {
    if (!this.microphoneAvailable) {
      throw new LiveAvatarError(1009, 'this session was joined without a microphone slot: connect with microphone true or "muted"');
    }
    await this.#audioTransceiver.sender.replaceTrack(track);
    if (this.#microphone && !this.#microphone.external) this.#stopMicrophone();
    this.#microphone = track ? { track, stream: new MediaStream([track]), external: true } : null;
    this.emit("microphone", { enabled: this.microphoneEnabled });
  }

  /**
   * Send a camera track (for "vision"), or stop sending with null; the caller owns the track.
   * Needs a connection made with `camera: true` or `"muted"`.
   * @param {MediaStreamTrack|null} track
   */
  async setCameraTrack(track) {
    if (!this.#videoTransceiver || this.#videoTransceiver.direction !== "sendrecv") {
      throw new LiveAvatarError(1009, 'this session was joined without a camera slot: connect with camera true or "muted"');
    }
    await this.#videoTransceiver.sender.replaceTrack(track);
    if (this.#camera && !this.#camera.external) this.#camera.track.stop();
    this.#camera = track ? { track, stream: new MediaStream([track]), external: true } : null;
  }

  /**
   * Send one message exactly as given (a provider SDK's raw send: JSON text or its UTF-8 bytes), within
   * the profile's size and rate limits; commands go ahead of queued chat.
   * @param {string|Uint8Array|ArrayBuffer} data
   * @returns {Promise<void>} resolves once it has been handed to the data channel
   */
  sendRawMessage(data) {
    if (!this.channel || this.channel.readyState !== "open") {
      return Promise.reject(new LiveAvatarError(1219, "the session is not connected"));
    }
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    let control = false;
    try {
      control = JSON.parse(text).type === "command";
    } catch {
      // Not JSON: the server answers with an error event; send it as it is.
    }
    return this.#outbox.push(text, { control });
  }

  async #startMicrophone() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: { ...this.#options.audioProcessing }, video: false });
    this.#microphone = { track: stream.getAudioTracks()[0], stream };
  }

  #stopMicrophone() {
    if (this.#microphone && !this.#microphone.external) this.#microphone.track.stop();
    this.#microphone = null;
  }

  /**
   * Connection quality since the previous call: round-trip time, received video frame rate, total
   * received bitrate and packet loss. Fields are null until they can be measured.
   * @returns {Promise<{rttMs: number|null, fps: number|null, bitrateKbps: number|null, packetLossPct: number|null,
   *   frameWidth: number|null, frameHeight: number|null, framesDecoded: number}>}
   */
  async getStats() {
    const empty = { rttMs: null, fps: null, bitrateKbps: null, packetLossPct: null, frameWidth: null, frameHeight: null, framesDecoded: 0 };
    if (!this.pc) return empty;
    const report = await this.pc.getStats();
    const now = performance.now();
    let pairId = null;
    let rtt = null;
    let remoteRtt = null;
    let video = null;
    let bytes = 0;
    let lost = 0;
    let received = 0;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.currentRoundTripTime != null) {
        if (s.id === pairId || (pairId === null && s.nominated && s.state === "succeeded")) rtt = s.currentRoundTripTime * 1000;
      } else if (s.type === "remote-inbound-rtp" && s.roundTripTime != null) {
        remoteRtt = s.roundTripTime * 1000;
      } else if (s.type === "inbound-rtp") {
        bytes += s.bytesReceived || 0;
        lost += Math.max(0, s.packetsLost || 0);
        received += s.packetsReceived || 0;
        if (s.kind === "video") video = s;
      }
    });
    const frames = video ? video.framesDecoded || 0 : 0;
    const prev = this.#lastStats;
    this.#lastStats = { time: now, bytes, lost, received, frames };
    const dt = prev ? (now - prev.time) / 1000 : 0;
    const dLost = prev ? lost - prev.lost : lost;
    const dReceived = prev ? received - prev.received : received;
    return {
      rttMs: rtt ?? remoteRtt,
      fps: prev && dt >= 0.2 ? (frames - prev.frames) / dt : video && video.framesPerSecond != null ? video.framesPerSecond : null,
      bitrateKbps: prev && dt >= 0.2 ? ((bytes - prev.bytes) * 8) / dt / 1000 : null,
      packetLossPct: dLost + dReceived > 0 ? (100 * Math.max(0, dLost)) / (dLost + dReceived) : null,
      frameWidth: video ? video.frameWidth ?? null : null,
      frameHeight: video ? video.frameHeight ?? null : null,
      framesDecoded: frames,
    };
  }

  /** Leave the session: close the connection and stop the microphone and camera. Safe to call twice. */
  close() {
    if (this.state === "closed") return;
    this.#setState("closed", "local");
    this.#teardown();
  }

  #teardown() {
    this.#failPending(new LiveAvatarError(1219, "the session was closed"));
    if (this.#outbox) this.#outbox.clear(new LiveAvatarError(1219, "the session was closed"));
    if (this.channel) this.channel.close();
    if (this.#clientRender) this.#clientRender.close();
    if (this.pc) this.pc.close();
    this.#stopMicrophone();
    if (this.#camera && !this.#camera.external) this.#camera.track.stop();
    this.#camera = null;
  }

  #failPending(err) {
    for (const { reject, timer } of this.#pendingAcks.values()) {
      clearTimeout(timer);
      reject(err);
    }
    this.#pendingAcks.clear();
  }

  #setState(state, reason) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this.emit("connection-state", reason ? { state, previous, reason } : { state, previous });
  }

  #onMessage(raw) {
    if (typeof raw !== "string") raw = new TextDecoder().decode(raw);
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      console.warn("liveavatar: ignoring a message that is not JSON", raw);
      return;
    }
    if (!message || message.v !== VERSION) return;
    this.emit("stream-message", { message, raw });
    const pld = message.pld || {};
    if (message.type === "chat") {
      const key = `${pld.from || "bot"}:${message.mid}`;
      const text = (this.#incoming.get(key) || "") + (pld.text || "");
      if (message.fin) this.#incoming.delete(key);
      else this.#incoming.set(key, text);
      const payload = { mid: message.mid, text, delta: pld.text || "", fin: !!message.fin };
      this.emit(pld.from === "user" ? "user-text" : "bot-text", payload);
    } else if (message.type === "command") {
      const ack = { mid: message.mid, cmd: pld.cmd, code: pld.code, msg: pld.msg };
      this.emit("command-ack", ack);
      const pending = this.#pendingAcks.get(message.mid);
      if (!pending) return;
      this.#pendingAcks.delete(message.mid);
      clearTimeout(pending.timer);
      if (pld.code === 1000) pending.resolve({ cmd: pld.cmd, code: pld.code, msg: pld.msg });
      else pending.reject(new LiveAvatarError(pld.code, pld.msg, { ack }));
    } else if (message.type === "event") {
      if (pld.event === "audio_start") this.emit("audio-start", {});
      else if (pld.event === "audio_end") this.emit("audio-end", {});
      else if (pld.event === "error") this.emit("error", { code: pld.code, msg: pld.msg });
    }
  }
}

function compact(params = {}) {
  const out = {};
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (typeof value === "object" && !Array.isArray(value)) {
      const inner = compact(value);
      if (Object.keys(inner).length) out[key] = inner;
    } else {
      out[key] = value;
    }
  }
  return out;
}

// --- REST helpers (demo and tests; production backends call the REST API themselves) -------------

async function readEnvelope(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    throw new LiveAvatarError(-1, `unexpected answer from the server (HTTP ${response.status})`);
  }
  if (!body || body.code !== 1000) {
    throw new LiveAvatarError(body && typeof body.code === "number" ? body.code : -1, (body && body.msg) || `HTTP ${response.status}`);
  }
  return body.data;
}

/**
 * Call the REST API with an API key; resolves with the envelope's `data`, rejects with a
 * LiveAvatarError (the envelope's code and msg) on any code other than 1000.
 * @param {string} baseUrl e.g. "https://avatar.example.com" (no /api/open)
 * @param {string} apiKey
 * @param {string} method
 * @param {string} path e.g. "/api/open/v4/voice/list"
 * @param {{query?: object, body?: object}} [options]
 */
export async function apiRequest(baseUrl, apiKey, method, path, { query, body } = {}) {
  const url = new URL(baseUrl.replace(/\/+$/, "") + path, location.href);
  for (const [key, value] of Object.entries(query || {})) if (value != null) url.searchParams.set(key, value);
  const headers = { "x-api-key": apiKey };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw fetchError(err);
  }
  return readEnvelope(response);
}

/**
 * Create a session (POST session/create). Production: your backend does this, never the browser.
 * @param {string} baseUrl
 * @param {string} apiKey
 * @param {{avatar_id: string, duration?: number, voice_id?: string, language?: string, mode_type?: 1|2,
 *   background_url?: string, knowledge_id?: string, voice_params?: object}} params
 * @returns {Promise<object>} the session object; pass its `credentials` to LiveAvatarSession.connect
 */
export function createSession(baseUrl, apiKey, params) {
  return apiRequest(baseUrl, apiKey, "POST", "/api/open/v4/liveAvatar/session/create", { body: compact(params) });
}

/** Close a session (idempotent). @returns {Promise<object>} the session object */
export function closeSession(baseUrl, apiKey, id) {
  return apiRequest(baseUrl, apiKey, "POST", "/api/open/v4/liveAvatar/session/close", { body: { id } });
}

/** The installed avatars. @returns {Promise<object[]>} avatar objects (avatar_id, name, url, thumbnailUrl, ...) */
export async function listAvatars(baseUrl, apiKey, { page = 1, size = 100 } = {}) {
  return (await apiRequest(baseUrl, apiKey, "GET", "/api/open/v4/liveAvatar/avatar/list", { query: { page, size } })).result;
}

/** Voices usable for streaming. @returns {Promise<object[]>} voice objects (voice_id, name, language, ...) */
export async function listVoices(baseUrl, apiKey, { page = 1, size = 1000 } = {}) {
  const query = { page, size, support_stream: 1 };
  return (await apiRequest(baseUrl, apiKey, "GET", "/api/open/v4/voice/list", { query })).result;
}

/** Languages the voices speak. @returns {Promise<{lang_code: string, lang_name: string}[]>} */
export async function listLanguages(baseUrl, apiKey) {
  return (await apiRequest(baseUrl, apiKey, "GET", "/api/open/v3/language/list")).lang_list;
}
