// What the compatibility clients (agora.js, livekit.js, trtc.js) share: reading provider-shaped
// credentials, playing remote tracks into elements, message payloads, stats, a many-argument emitter.
//
// The provider-shaped credentials of a liveavatar session join liveavatar itself, never the provider's
// cloud: the app id / URL field is the server's base URL (with `#ice=<base64url JSON>` when the operator
// configured ICE servers), the channel / room is the session id and the token / user sig the join token.

import { LiveAvatarError, LiveAvatarSession } from "../liveavatar.js";

export { LiveAvatarError, LiveAvatarSession };

const decoder = new TextDecoder();

/**
 * The server base URL and ICE servers from a provider app id / URL field.
 * @param {string} value e.g. "https://avatar.example.com#ice=W3sidXJscyI6..."
 * @returns {{base: string, iceServers: RTCIceServer[]}}
 */
export function parseServerUrl(value) {
  if (typeof value !== "string" || !/^https?:\/\//i.test(value)) {
    throw new LiveAvatarError(
      1003,
      `expected the server URL from the session's credentials, got ${JSON.stringify(value)} ` +
        "(liveavatar's compatibility clients join a liveavatar server, not the provider's cloud)",
    );
  }
  const hash = value.indexOf("#");
  const base = (hash < 0 ? value : value.slice(0, hash)).replace(/\/+$/, "");
  let iceServers = [];
  const fragment = hash < 0 ? "" : value.slice(hash + 1);
  const match = /(?:^|&)ice=([A-Za-z0-9_-]+)/.exec(fragment);
  if (match) {
    const b64 = match[1].replace(/-/g, "+").replace(/_/g, "/");
    iceServers = JSON.parse(decoder.decode(Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0))));
  }
  return { base, iceServers };
}

/** The session id a join token was issued for (its `sub` claim; the server checks the signature). */
export function tokenSession(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    if (typeof claims.sub === "string" && claims.sub) return claims.sub;
  } catch {
    // fall through
  }
  throw new LiveAvatarError(1101, "the token is not a liveavatar join token");
}

/** liveavatar credentials (for LiveAvatarSession.connect) from the provider-shaped fields. */
export function joinCredentials(serverUrl, sessionId, token) {
  const { base, iceServers } = parseServerUrl(serverUrl);
  return {
    webrtc_url: `${base}/api/open/v4/liveAvatar/webrtc/${encodeURIComponent(sessionId)}/offer`,
    webrtc_token: token,
    ice_servers: iceServers,
  };
}

/**
 * A received message: the UTF-8 bytes (a Uint8Array, as the SDKs deliver them) whose string form is the
 * JSON text, so that both `new TextDecoder().decode(msg)` and `JSON.parse(msg)` work.
 */
export class MessageBytes extends Uint8Array {
  toString() {
    return decoder.decode(this);
  }

  toJSON() {
    return this.toString();
  }
}

/**
 * The text of a received message as the compatibility clients deliver it: a chat message also carries
 * its `fin` inside `pld`, where AKool's integration guide reads it (`parsedMessage.pld.fin`).
 */
export function deliverable(raw, message) {
  if (!message || message.type !== "chat" || !message.pld || typeof message.pld !== "object" || "fin" in message.pld) return raw;
  return JSON.stringify({ ...message, pld: { ...message.pld, fin: !!message.fin } });
}

/** UTF-8 bytes of a string, Uint8Array, ArrayBuffer or typed-array view. */
export function toBytes(data) {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("message must be a string, Uint8Array or ArrayBuffer");
}

/** An emitter whose listeners take several arguments, as the provider SDKs' do. */
export class ArgsEmitter {
  #listeners = new Map();

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, []);
    this.#listeners.get(event).push(listener);
    return this;
  }

  once(event, listener) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      listener(...args);
    };
    wrapper.original = listener;
    return this.on(event, wrapper);
  }

  off(event, listener) {
    const list = this.#listeners.get(event);
    if (list) {
      const i = list.findIndex((l) => l === listener || l.original === listener);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  removeAllListeners(event) {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
    return this;
  }

  listenerCount(event) {
    return (this.#listeners.get(event) || []).length;
  }

  emit(event, ...args) {
    for (const listener of [...(this.#listeners.get(event) || [])]) {
      try {
        listener(...args);
      } catch (err) {
        console.error(`liveavatar compat: "${event}" listener failed`, err);
      }
    }
    return this;
  }
}

/** The element for an id or an element (null when there is none). */
export function resolveElement(elementOrId) {
  if (!elementOrId) return null;
  if (typeof elementOrId === "string") return document.getElementById(elementOrId);
  return elementOrId;
}

/**
 * Play a track in a new <video>/<audio> element inside `container` (document.body when not given);
 * returns the element. Video fills the container, like the SDKs' players.
 */
export function playTrack(track, container, { fit = "cover", mirror = false } = {}) {
  const kind = track.kind;
  const element = document.createElement(kind === "video" ? "video" : "audio");
  element.autoplay = true;
  element.playsInline = true;
  element.srcObject = new MediaStream([track]);
  if (kind === "video") {
    element.muted = true; // sound comes through the audio track's own element
    Object.assign(element.style, { width: "100%", height: "100%", objectFit: fit, display: "block" });
    if (mirror) element.style.transform = "rotateY(180deg)";
    (resolveElement(container) || document.body).appendChild(element);
  } else if (container) {
    (resolveElement(container) || document.body).appendChild(element);
  }
  element.play().catch((err) => console.warn(`liveavatar compat: ${kind} autoplay was blocked`, err));
  return element;
}

/** Remove a player element made by playTrack. */
export function stopElement(element) {
  if (!element) return;
  element.pause();
  element.srcObject = null;
  element.remove();
}

/** Log once that a provider feature is accepted and does nothing here. */
const noted = new Set();
export function noteNoOp(what, why = "it has no effect with liveavatar") {
  if (noted.has(what)) return;
  noted.add(what);
  console.info(`liveavatar compat: ${what} is accepted; ${why}`);
}

/**
 * Receive-side statistics of a peer connection, with rates since the previous call.
 * @returns {Promise<object>} {rttMs, video: {...}, audio: {...}, recvBytes, sendBytes, recvBitrate, sendBitrate}
 */
export async function sampleStats(pc, previous) {
  const now = performance.now();
  const out = { time: now, rttMs: null, recvBytes: 0, sendBytes: 0, video: null, audio: null, outAudio: null, outVideo: null, availableOutgoingBitrate: null };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      if (s.currentRoundTripTime != null) out.rttMs = s.currentRoundTripTime * 1000;
      if (s.availableOutgoingBitrate != null) out.availableOutgoingBitrate = s.availableOutgoingBitrate;
    } else if (s.type === "inbound-rtp") {
      out.recvBytes += s.bytesReceived || 0;
      out[s.kind] = {
        bytes: s.bytesReceived || 0,
        packets: s.packetsReceived || 0,
        lost: Math.max(0, s.packetsLost || 0),
        frames: s.framesDecoded || 0,
        width: s.frameWidth || 0,
        height: s.frameHeight || 0,
        fps: s.framesPerSecond || 0,
        jitterMs: (s.jitter || 0) * 1000,
        jitterBufferMs: s.jitterBufferEmittedCount ? (1000 * (s.jitterBufferDelay || 0)) / s.jitterBufferEmittedCount : 0,
        audioLevel: s.audioLevel || 0,
        freezeMs: 1000 * (s.totalFreezesDuration || 0),
        codecId: s.codecId,
      };
    } else if (s.type === "outbound-rtp") {
      out.sendBytes += s.bytesSent || 0;
      out[s.kind === "video" ? "outVideo" : "outAudio"] = { bytes: s.bytesSent || 0, packets: s.packetsSent || 0 };
    } else if (s.type === "media-source" && s.kind === "audio") {
      out.localAudioLevel = s.audioLevel || 0;
    }
  });
  report.forEach((s) => {
    for (const kind of ["video", "audio"]) {
      if (out[kind] && out[kind].codecId === s.id) out[kind].codec = String(s.mimeType || "").split("/")[1] || "";
    }
  });
  const dt = previous ? (now - previous.time) / 1000 : 0;
  const rate = (a, b) => (dt > 0.2 && b != null ? Math.max(0, ((a - b) * 8) / dt) : 0);
  out.recvBitrate = rate(out.recvBytes, previous && previous.recvBytes);
  out.sendBitrate = rate(out.sendBytes, previous && previous.sendBytes);
  for (const kind of ["video", "audio"]) {
    const cur = out[kind];
    const prev = previous && previous[kind];
    if (!cur) continue;
    cur.bitrate = rate(cur.bytes, prev && prev.bytes);
    const lost = cur.lost - (prev ? prev.lost : 0);
    const got = cur.packets - (prev ? prev.packets : 0);
    cur.lossPct = lost + got > 0 ? (100 * Math.max(0, lost)) / (lost + got) : 0;
    if (kind === "video" && dt > 0.2 && prev) cur.fps = (cur.frames - prev.frames) / dt;
  }
  return out;
}

/** A 1 (excellent) .. 5 (very bad) network quality from round-trip time and loss; 0 when unknown. */
export function qualityOf(rttMs, lossPct) {
  if (rttMs == null) return 0;
  const limits = [
    [100, 1],
    [200, 3],
    [400, 8],
    [800, 15],
  ];
  for (let i = 0; i < limits.length; i++) {
    if (rttMs < limits[i][0] && lossPct < limits[i][1]) return i + 1;
  }
  return 5;
}

/**
 * liveavatar extension: `{liveavatarRender: "client", liveavatarCanvas}` in a client's options draws the avatar
 * in the browser (a session created with render: "client"; docs/client-rendering.md) into the canvas (an
 * element or its id). The options for LiveAvatarSession.connect.
 */
export function renderOptions(options = {}) {
  if (!options || options.liveavatarRender !== "client") return {};
  return { render: "client", canvas: options.liveavatarCanvas ? resolveElement(options.liveavatarCanvas) : null };
}
