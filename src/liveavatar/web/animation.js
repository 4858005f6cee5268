// liveavatar animation stream v1 in the browser: decode HELLO / FRAMES / CUT (docs/animation-stream.md), keep
// the frames on the audio timeline, and find the audio position the user hears now.
//
// The same format as src/liveavatar/protocol/animation.py; both pass tests/vectors/animation.json.

export const ANIMATION_LABEL = "liveavatar-animation";
export const VERSION = 1;
export const HELLO = 0x00;
export const FRAMES = 0x01;
export const CUT = 0x02;
export const RECORD_BYTES = 13;
export const SAMPLE_RATE = 48000;
/** The renderer's clamps (render/renderer.py): the i8 fields are scaled to these. */
export const LIMITS = Object.freeze({ maxTurn: 10.0, maxRoll: 4.5, maxShift: 6.0 });
const POSITIONS = 2 ** 32;
/** Opus's encoder delay (6.5 ms): the sound of position p is heard with RTP timestamp rtp_base + p + this. */
export const OPUS_DELAY = 312;

/** A message that is not animation stream v1. */
export class AnimationError extends Error {
  constructor(msg) {
    super(msg);
    this.name = "AnimationError";
  }
}

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new AnimationError("a binary message is needed");
}

function checkFps(fps) {
  if (fps === 0 || SAMPLE_RATE % fps !== 0) throw new AnimationError(`${fps} fps does not divide 48000 samples`);
  return fps;
}

/** One 13-byte record -> a FaceState ({mouth[5], blink, yaw, pitch, roll, dx, dy, brows, smile}). */
export function unpackState(view, offset) {
  const u = (i) => view.getUint8(offset + i);
  const s = (i) => view.getInt8(offset + i);
  return {
    mouth: [u(0) / 255, u(1) / 255, u(2) / 255, u(3) / 255, u(4) / 255],
    blink: u(5) / 255,
    yaw: (s(6) * LIMITS.maxTurn) / 127,
    pitch: (s(7) * LIMITS.maxTurn) / 127,
    roll: (s(8) * LIMITS.maxRoll) / 127,
    dx: (s(9) * LIMITS.maxShift) / 127,
    dy: (s(10) * LIMITS.maxShift) / 127,
    brows: s(11) / 127,
    smile: s(12) / 127,
  };
}

/** Python's round() (halves to even), as the server quantises. */
function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
const unit = (v) => Math.max(0, Math.min(255, pyRound((Number(v) || 0) * 255)));
const scale = (v, limit) => Math.max(-127, Math.min(127, pyRound(((Number(v) || 0) * 127) / limit)));

/**
 * Decode one message.
 * @returns {{type: "hello", fps, width, height, rtpBase, info} | {type: "frames", fps, firstPosition, states} |
 *   {type: "cut", position}}
 */
export function decode(data) {
  const bytes = bytesOf(data);
  if (bytes.length < 2) throw new AnimationError(`${bytes.length} bytes is too short for a message`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [kind, version] = [bytes[0], bytes[1]];
  if (version !== VERSION) throw new AnimationError(`version ${version} is not ${VERSION}`);
  if (kind === HELLO) {
    if (bytes.length < 12) throw new AnimationError("HELLO is too short");
    let info = {};
    if (bytes.length > 12) {
      try {
        info = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(12)));
      } catch (err) {
        throw new AnimationError(`HELLO's JSON: ${err.message}`);
      }
      if (info === null || typeof info !== "object" || Array.isArray(info)) throw new AnimationError("HELLO's JSON is not an object");
    }
    return {
      type: "hello",
      fps: checkFps(view.getUint16(2, true)),
      width: view.getUint16(4, true),
      height: view.getUint16(6, true),
      rtpBase: view.getUint32(8, true),
      info,
    };
  }
  if (kind === FRAMES) {
    if (bytes.length < 10) throw new AnimationError("FRAMES is too short");
    const fps = checkFps(view.getUint16(2, true));
    const count = view.getUint16(8, true);
    if (bytes.length !== 10 + count * RECORD_BYTES) throw new AnimationError(`FRAMES of ${count} records cannot be ${bytes.length} bytes`);
    const states = [];
    for (let i = 0; i < count; i++) states.push(unpackState(view, 10 + i * RECORD_BYTES));
    return { type: "frames", fps, firstPosition: view.getUint32(4, true), states };
  }
  if (kind === CUT) {
    if (bytes.length !== 6) throw new AnimationError(`CUT is 6 bytes, not ${bytes.length}`);
    return { type: "cut", position: view.getUint32(2, true) };
  }
  throw new AnimationError(`unknown message type ${kind}`);
}

/** A FRAMES message (for tests and tools; the server sends these). */
export function encodeFrames(firstPosition, states, fps = 25) {
  const out = new Uint8Array(10 + states.length * RECORD_BYTES);
  const view = new DataView(out.buffer);
  view.setUint8(0, FRAMES);
  view.setUint8(1, VERSION);
  view.setUint16(2, fps, true);
  view.setUint32(4, ((firstPosition % POSITIONS) + POSITIONS) % POSITIONS, true);
  view.setUint16(8, states.length, true);
  states.forEach((st, i) => {
    const o = 10 + i * RECORD_BYTES;
    for (let k = 0; k < 5; k++) view.setUint8(o + k, unit((st.mouth || [])[k]));
    view.setUint8(o + 5, unit(st.blink));
    const signed = [
      scale(st.yaw, LIMITS.maxTurn), scale(st.pitch, LIMITS.maxTurn), scale(st.roll, LIMITS.maxRoll),
      scale(st.dx, LIMITS.maxShift), scale(st.dy, LIMITS.maxShift), scale(st.brows, 1), scale(st.smile, 1),
    ];
    signed.forEach((v, k) => view.setInt8(o + 6 + k, v));
  });
  return out;
}

/** A HELLO message (for tests and tools). */
export function encodeHello({ fps = 25, width, height, rtpBase = 0, info = {} }) {
  const json = new TextEncoder().encode(JSON.stringify(info));
  const out = new Uint8Array(12 + json.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, HELLO);
  view.setUint8(1, VERSION);
  view.setUint16(2, fps, true);
  view.setUint16(4, width, true);
  view.setUint16(6, height, true);
  view.setUint32(8, rtpBase >>> 0, true);
  out.set(json, 12);
  return out;
}

/** A CUT message (for tests and tools). */
export function encodeCut(position) {
  const out = new Uint8Array(6);
  const view = new DataView(out.buffer);
  view.setUint8(0, CUT);
  view.setUint8(1, VERSION);
  view.setUint32(2, position >>> 0, true);
  return out;
}

function lerpState(a, b, t) {
  const mix = (x, y) => x + (y - x) * t;
  return {
    mouth: a.mouth.map((v, i) => mix(v, b.mouth[i])),
    blink: mix(a.blink, b.blink),
    yaw: mix(a.yaw, b.yaw),
    pitch: mix(a.pitch, b.pitch),
    roll: mix(a.roll, b.roll),
    dx: mix(a.dx, b.dx),
    dy: mix(a.dy, b.dy),
    brows: mix(a.brows, b.brows),
    smile: mix(a.smile, b.smile),
  };
}

/**
 * The frames received so far, on the audio timeline (positions unwrapped past 2^32), read at any position
 * by linear interpolation between the two frames around it.
 */
export class Timeline {
  constructor({ keepSeconds = 2 } = {}) {
    this.keep = keepSeconds * SAMPLE_RATE;
    this.step = SAMPLE_RATE / 25;
    this.frames = []; // [position, state], sorted by position
    this.latest = null; // unwrapped position of the newest frame
  }

  /** Unwrap a 32-bit position near the newest one. */
  unwrap(position) {
    if (this.latest === null) return position;
    let p = position + Math.round((this.latest - position) / POSITIONS) * POSITIONS;
    if (p < 0) p += POSITIONS;
    return p;
  }

  /** Index of the first frame at or after `position`. */
  #search(position) {
    let lo = 0, hi = this.frames.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.frames[mid][0] < position) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Store a decoded FRAMES message (replacing frames at the same positions). */
  add({ fps, firstPosition, states }) {
    this.step = SAMPLE_RATE / fps;
    const first = this.unwrap(firstPosition);
    const last = first + (states.length - 1) * this.step;
    const from = this.#search(first), to = this.#search(last + 1);
    this.frames.splice(from, to - from, ...states.map((state, i) => [first + i * this.step, state]));
    this.latest = Math.max(this.latest ?? 0, last);
  }

  /** Void the frames at and after `position` (a CUT). */
  cut(position) {
    const p = this.unwrap(position);
    this.frames.length = this.#search(p);
    if (this.latest !== null && this.latest >= p) this.latest = this.frames.length ? this.frames[this.frames.length - 1][0] : p;
  }

  /** The state at an (unwrapped) position; null when no frame is within one frame step of it. */
  stateAt(position) {
    const old = this.#search(position - this.keep);
    if (old > 1) this.frames.splice(0, old - 1);
    const i = this.#search(position);
    const b = this.frames[i], a = this.frames[i - 1];
    if (b && b[0] === position) return b[1];
    if (a && b && b[0] - a[0] <= 1.5 * this.step) return lerpState(a[1], b[1], (position - a[0]) / (b[0] - a[0]));
    if (a && position - a[0] <= this.step) return a[1];
    if (b && b[0] - position <= this.step) return b[1];
    return null;
  }
}

/**
 * Where the user's ears are on the audio timeline: the audio receiver's playout RTP timestamp
 * (getSynchronizationSources) minus the HELLO's rtp_base; without one, an estimate from the local clock,
 * the stream's lead and the jitter buffer's delay.
 */
export class PlayoutClock {
  /** @param {() => RTCRtpReceiver|null} receiver the audio receiver (may appear later) */
  constructor(receiver) {
    this.receiver = receiver;
    this.hello = null;
    this.anchor = null; // {position, at} for the estimate
    this.jitterMs = 0;
    this.source = "none";
  }

  setHello(hello) {
    this.hello = hello;
  }

  /** Remember when a FRAMES message arrived (the estimate's anchor: it leads its audio by lead_ms). */
  sawFrames(firstPosition, timeline) {
    if (this.anchor) return;
    const lead = ((this.hello && this.hello.info.lead_ms) || 150) * 48;
    this.anchor = { position: timeline.unwrap(firstPosition) - lead, at: performance.now() };
  }

  /** Refresh the jitter-buffer delay (async getStats; call now and then). */
  async refreshJitter() {
    const r = this.receiver();
    if (!r || !r.getStats) return;
    (await r.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp" && s.jitterBufferEmittedCount > 0) {
        this.jitterMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
      }
    });
  }

  /** The audio position heard now, unwrapped near the timeline's newest frame; null before anything is known. */
  position(timeline) {
    const hello = this.hello;
    const r = this.receiver();
    if (hello && hello.rtpBase !== undefined && (hello.info.rtp_known ?? hello.rtpBase !== 0) && r && r.getSynchronizationSources) {
      const src = r.getSynchronizationSources()[0];
      if (src && src.rtpTimestamp !== undefined) {
        const p = (src.rtpTimestamp - hello.rtpBase - OPUS_DELAY + 2 * POSITIONS) % POSITIONS;
        // the sample was played at src.timestamp (ms, the performance time origin's clock)
        const age = Math.min(Math.max(performance.timeOrigin + performance.now() - src.timestamp, 0), 100);
        this.source = "rtp";
        return timeline.unwrap(p) + age * 48;
      }
    }
    if (!this.anchor) return null;
    this.source = "estimate";
    return this.anchor.position + (performance.now() - this.anchor.at - this.jitterMs) * 48;
  }
}
