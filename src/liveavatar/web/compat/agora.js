// Agora Web SDK (agora-rtc-sdk-ng) shape over liveavatar: code written for AKool's Agora integration
// runs against a liveavatar server after changing one import line:
//
//   import AgoraRTC from "https://avatar.example.com/web/compat/agora.js";   // was "agora-rtc-sdk-ng"
//   const client = AgoraRTC.createClient({ mode: "rtc", codec: "vp8" });
//   await client.join(credentials.agora_app_id, credentials.agora_channel, credentials.agora_token, credentials.agora_uid);
//
// It joins liveavatar (a session created with stream_type "agora"), not Agora's cloud. The avatar is the
// remote user with uid 1. Agora's data-stream limits hold as with Agora: a message of at most 1 KB,
// at most 6 KB/s (faster sends are delayed, never dropped). See docs/compat.md for what is covered.

import { PROFILES } from "../liveavatar.js";
import {
  ArgsEmitter,
  deliverable,
  LiveAvatarSession,
  MessageBytes,
  joinCredentials,
  noteNoOp,
  playTrack,
  qualityOf,
  sampleStats,
  stopElement,
  toBytes,
  renderOptions,
} from "./common.js";

export const AVATAR_UID = 1;
const LIMITS = PROFILES.agora;
const STATS_INTERVAL_MS = 1000;

/** An error with Agora's string `code` (e.g. "INVALID_OPERATION"). */
export class AgoraRTCError extends Error {
  constructor(code, message, data) {
    super(`AgoraRTCError ${code}: ${message}`);
    this.name = "AgoraRTCException";
    this.code = code;
    this.data = data;
  }
}

function agoraError(err, fallback = "UNEXPECTED_ERROR") {
  if (err instanceof AgoraRTCError) return err;
  const code = err && err.code === 1101 ? "INVALID_PARAMS" : err && err.code === 1219 ? "INVALID_OPERATION" : fallback;
  return new AgoraRTCError(code, (err && (err.msg || err.message)) || String(err), err);
}

/** Shared by local and remote tracks: one MediaStreamTrack and the element it plays in. */
class Track {
  _element = null;

  constructor(mediaStreamTrack) {
    this._track = mediaStreamTrack;
  }

  get trackMediaType() {
    return this._track.kind;
  }

  get isPlaying() {
    return this._element !== null;
  }

  getTrackId() {
    return this._track.id;
  }

  getMediaStreamTrack() {
    return this._track;
  }

  /** Play in a new element inside `element` (an element or its id; audio needs none). */
  play(element, config = {}) {
    this.stop();
    const container = this._track.kind === "video" ? element || null : null;
    this._element = playTrack(this._track, container, { fit: config.fit || "cover", mirror: !!config.mirror });
    if (this._volume !== undefined && this._track.kind === "audio") this._element.volume = this._volume;
  }

  stop() {
    stopElement(this._element);
    this._element = null;
  }
}

/** The avatar's audio or video (IRemoteAudioTrack / IRemoteVideoTrack). */
class RemoteTrack extends Track {
  constructor(mediaStreamTrack, uid, client) {
    super(mediaStreamTrack);
    this.uid = uid;
    this._client = client;
  }

  getUserId() {
    return this.uid;
  }

  /** 0..100, as Agora's setVolume takes it (up to 100 here). */
  setVolume(volume) {
    this._volume = Math.max(0, Math.min(100, volume)) / 100;
    if (this._element) this._element.volume = this._volume;
  }

  /** 0..1, from the receiver's audio level. */
  getVolumeLevel() {
    const audio = this._client._lastStats && this._client._lastStats.audio;
    return audio ? audio.audioLevel : 0;
  }

  getStats() {
    return (this.trackMediaType === "video" ? this._client.getRemoteVideoStats() : this._client.getRemoteAudioStats())[this.uid] || {};
  }
}

/** A microphone or camera track made by createMicrophoneAudioTrack / createCameraVideoTrack. */
class LocalTrack extends Track {
  _closed = false;
  _muted = false;
  processorDestination = { pipe: (next) => next, unpipe: () => {} };

  constructor(mediaStreamTrack, constraints) {
    super(mediaStreamTrack);
    this._constraints = constraints;
  }

  get enabled() {
    return this._track.enabled && !this._closed;
  }

  get muted() {
    return this._muted;
  }

  getTrackLabel() {
    return this._track.label;
  }

  /** Enable or disable sending and capture of this track (disabled: silence / black). */
  async setEnabled(enabled) {
    this._track.enabled = !!enabled;
  }

  async setMuted(muted) {
    this._muted = !!muted;
    this._track.enabled = !muted;
  }

  /** Switch to another microphone or camera. */
  async setDevice(deviceId) {
    const kind = this._track.kind;
    const constraints = { ...this._constraints, deviceId: { exact: deviceId } };
    const stream = await navigator.mediaDevices.getUserMedia(kind === "audio" ? { audio: constraints } : { video: constraints });
    const fresh = kind === "audio" ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    const old = this._track;
    this._track = fresh;
    if (this._owner) await this._owner._replaceLocal(this);
    old.stop();
    if (this._element) this.play(this._element.parentElement);
  }

  async setEncoderConfiguration(config) {
    if (this._track.kind === "video" && config && typeof config === "object") {
      await this._track.applyConstraints(videoConstraints(config));
    }
  }

  /** Extension processors (AI denoiser etc.) are accepted and not run: the server hears the raw microphone. */
  pipe(processor) {
    noteNoOp("LocalTrack.pipe(extension processor)", "the extension is not run");
    return processor;
  }

  unpipe() {}

  setVolume() {
    noteNoOp("LocalAudioTrack.setVolume");
  }

  getVolumeLevel() {
    const stats = this._owner && this._owner._lastStats;
    return (stats && stats.localAudioLevel) || 0;
  }

  close() {
    this.stop();
    this._track.stop();
    this._closed = true;
  }
}

function videoConstraints(encoderConfig) {
  if (!encoderConfig || typeof encoderConfig !== "object") return {};
  const out = {};
  if (encoderConfig.width) out.width = encoderConfig.width;
  if (encoderConfig.height) out.height = encoderConfig.height;
  if (encoderConfig.frameRate) out.frameRate = encoderConfig.frameRate;
  return out;
}

/** IAgoraRTCClient: join a liveavatar session, subscribe to the avatar, send and receive stream messages. */
class Client extends ArgsEmitter {
  connectionState = "DISCONNECTED";
  remoteUsers = [];
  localTracks = [];
  uid = undefined;
  channelName = undefined;
  _lastStats = null;

  #session = null;
  #remote = { audio: null, video: null };
  #announced = false;
  #joinedAt = 0;
  #timer = null;
  #ticks = 0;
  #volumeIndicator = false;

  constructor(config = {}) {
    super();
    this.mode = config.mode || "rtc";
    this.codec = config.codec || "vp8";
    /** liveavatar extension: createClient({..., liveavatarRender: "client", liveavatarCanvas}) */
    this.liveavatarRender = renderOptions(config);
    if (this.codec !== "vp8") noteNoOp(`codec "${this.codec}"`, "liveavatar always sends VP8");
  }

  /** Register a listener; a `user-published` listener added after join still hears about the avatar. */
  on(event, listener) {
    super.on(event, listener);
    if (event === "user-published" && this.#session && !this.#announced) setTimeout(() => this.#announce(), 0);
    return this;
  }

  /**
   * Join the session.
   * @param {string} appId credentials.agora_app_id (the liveavatar server's URL)
   * @param {string} channel credentials.agora_channel (the session id)
   * @param {string} token credentials.agora_token (the join token)
   * @param {number|string|null} [uid] credentials.agora_uid
   * @returns {Promise<number|string>} the uid
   */
  async join(appId, channel, token, uid = null) {
    if (this.connectionState !== "DISCONNECTED") {
      throw new AgoraRTCError("INVALID_OPERATION", `Client already in ${this.connectionState} state`);
    }
    let credentials;
    try {
      credentials = joinCredentials(appId, channel, token);
    } catch (err) {
      throw agoraError(err, "INVALID_PARAMS");
    }
    const session = new LiveAvatarSession();
    this.#session = session;
    this.#announced = false;
    this.#setState("CONNECTING");
    session.on("track", ({ track }) => {
      this.#remote[track.kind] = track;
    });
    session.on("stream-message", ({ raw, message }) => {
      this.emit("stream-message", AVATAR_UID, new MessageBytes(new TextEncoder().encode(deliverable(raw, message))));
    });
    session.on("connection-state", ({ state, reason }) => this.#onSessionState(session, state, reason));
    try {
      // Send slots for a microphone and a camera published later (no renegotiation needed).
      await session.connect(credentials, { microphone: "muted", camera: "muted", profile: "agora", ...this.liveavatarRender });
    } catch (err) {
      if (this.#session === session) {
        this.#session = null;
        this.#setState("DISCONNECTED", "NETWORK_ERROR");
      }
      throw agoraError(err, "CAN_NOT_GET_GATEWAY_SERVER");
    }
    this.uid = uid ?? Math.floor(2 + Math.random() * 2 ** 31);
    this.channelName = channel;
    this.#joinedAt = performance.now();
    this.#setState("CONNECTED");
    this.#timer = setInterval(() => this.#tick(), STATS_INTERVAL_MS);
    // The avatar "publishes" right after the join resolves, as a remote user would.
    setTimeout(() => this.#announce(), 0);
    return this.uid;
  }

  #announce() {
    if (this.#announced || !this.#session || this.connectionState !== "CONNECTED") return;
    if (this.listenerCount("user-published") === 0) return; // told when the first listener arrives
    this.#announced = true;
    let user = this.remoteUsers.find((u) => u.uid === AVATAR_UID);
    if (!user) {
      user = { uid: AVATAR_UID, hasAudio: false, hasVideo: false, audioTrack: undefined, videoTrack: undefined };
      this.remoteUsers.push(user);
      this.emit("user-joined", user);
    }
    for (const kind of ["video", "audio"]) {
      if (!this.#remote[kind]) continue;
      user[kind === "video" ? "hasVideo" : "hasAudio"] = true;
      this.emit("user-published", user, kind);
    }
  }

  #onSessionState(session, state, reason) {
    if (session !== this.#session || this.connectionState === "CONNECTING") return;
    if (state === "disconnected") this.#setState("RECONNECTING", "NETWORK_ERROR");
    else if (state === "connected" && this.connectionState === "RECONNECTING") this.#setState("CONNECTED");
    else if (state === "failed" || (state === "closed" && reason === "remote")) {
      this.#dropAvatar();
      this.#end(state === "failed" ? "NETWORK_ERROR" : "SERVER_ERROR");
    }
  }

  #dropAvatar() {
    const user = this.remoteUsers.find((u) => u.uid === AVATAR_UID);
    if (!user) return;
    for (const kind of ["audio", "video"]) {
      const track = user[`${kind}Track`];
      if (track) track.stop();
      if (user[kind === "video" ? "hasVideo" : "hasAudio"]) this.emit("user-unpublished", user, kind);
    }
    this.remoteUsers = this.remoteUsers.filter((u) => u !== user);
    this.emit("user-left", user, "Quit");
  }

  #end(reason) {
    clearInterval(this.#timer);
    this.#timer = null;
    const session = this.#session;
    this.#session = null;
    this.#remote = { audio: null, video: null };
    if (session) session.close();
    this.#setState("DISCONNECTED", reason);
  }

  #setState(state, reason) {
    if (state === this.connectionState) return;
    const previous = this.connectionState;
    this.connectionState = state;
    this.emit("connection-state-change", state, previous, reason);
  }

  /** Leave the channel: the session's connection closes (close the session itself through the REST API). */
  async leave() {
    if (this.connectionState === "DISCONNECTED") return;
    this.#setState("DISCONNECTING", "LEAVE");
    for (const user of this.remoteUsers) {
      if (user.audioTrack) user.audioTrack.stop();
      if (user.videoTrack) user.videoTrack.stop();
    }
    this.remoteUsers = [];
    this.localTracks = [];
    this.#end("LEAVE");
  }

  /**
   * Subscribe to the avatar's audio or video.
   * @returns {Promise<RemoteTrack>} the remote track, with play(element) / stop()
   */
  async subscribe(user, mediaType) {
    const uid = typeof user === "object" && user ? user.uid : user;
    const track = this.#remote[mediaType];
    if (uid !== AVATAR_UID || !track) {
      throw new AgoraRTCError("INVALID_REMOTE_USER", `user ${uid} has not published ${mediaType}`);
    }
    const remote = this.remoteUsers.find((u) => u.uid === AVATAR_UID);
    const key = `${mediaType}Track`;
    if (remote && remote[key]) return remote[key];
    const wrapped = new RemoteTrack(track, AVATAR_UID, this);
    if (remote) remote[key] = wrapped;
    return wrapped;
  }

  async unsubscribe(user, mediaType) {
    const remote = this.remoteUsers.find((u) => u.uid === (typeof user === "object" && user ? user.uid : user));
    if (!remote) return;
    for (const kind of mediaType ? [mediaType] : ["audio", "video"]) {
      const track = remote[`${kind}Track`];
      if (track) track.stop();
      remote[`${kind}Track`] = undefined;
    }
  }

  /** Publish a microphone and/or camera track to the avatar. */
  async publish(tracks) {
    this.#requireConnected("publish");
    for (const track of [tracks].flat()) {
      if (!(track instanceof LocalTrack)) throw new AgoraRTCError("INVALID_LOCAL_TRACK", "publish takes tracks made by AgoraRTC");
      track._owner = this;
      await this._replaceLocal(track);
      if (!this.localTracks.includes(track)) this.localTracks.push(track);
    }
  }

  /** Stop sending the given tracks (all when none given); the tracks keep capturing until closed. */
  async unpublish(tracks) {
    const list = tracks === undefined ? [...this.localTracks] : [tracks].flat();
    for (const track of list) {
      this.localTracks = this.localTracks.filter((t) => t !== track);
      if (!this.#session) continue;
      if (track.trackMediaType === "audio") await this.#session.setMicrophoneTrack(null);
      else await this.#session.setCameraTrack(null);
    }
  }

  async _replaceLocal(track) {
    if (!this.#session) return;
    if (track.trackMediaType === "audio") await this.#session.setMicrophoneTrack(track.getMediaStreamTrack());
    else await this.#session.setCameraTrack(track.getMediaStreamTrack());
  }

  /**
   * Send one stream message (at most 1 KB; at most 6 KB per second, faster sends wait their turn).
   * @param {string|Uint8Array} message
   * @param {boolean} [_flag] Agora's retry flag (messages always arrive here: the channel is reliable)
   */
  async sendStreamMessage(message, _flag) {
    this.#requireConnected("sendStreamMessage");
    let bytes;
    try {
      bytes = toBytes(message);
    } catch (err) {
      throw new AgoraRTCError("INVALID_PARAMS", err.message);
    }
    if (bytes.length > LIMITS.maxMessageBytes) {
      throw new AgoraRTCError("INVALID_PARAMS", `stream message is ${bytes.length} bytes; the limit is ${LIMITS.maxMessageBytes}`);
    }
    try {
      await this.#session.sendRawMessage(bytes);
    } catch (err) {
      throw agoraError(err, "INVALID_OPERATION");
    }
  }

  #requireConnected(what) {
    if (this.connectionState !== "CONNECTED" || !this.#session) {
      throw new AgoraRTCError("INVALID_OPERATION", `can not ${what} in ${this.connectionState} state`);
    }
  }

  /** Ask for "volume-indicator" events (every 2 s: [{uid, level 0-100}]). */
  enableAudioVolumeIndicator() {
    this.#volumeIndicator = true;
  }

  async #tick() {
    const session = this.#session;
    if (!session) return;
    this._lastStats = await sampleStats(session.pc, this._lastStats);
    if (++this.#ticks % 2) return;
    const s = this._lastStats;
    const loss = Math.max(s.video ? s.video.lossPct : 0, s.audio ? s.audio.lossPct : 0);
    this.emit("network-quality", {
      uplinkNetworkQuality: qualityOf(s.rttMs, 0),
      downlinkNetworkQuality: qualityOf(s.rttMs, loss),
    });
    if (this.#volumeIndicator) {
      this.emit("volume-indicator", [
        { uid: AVATAR_UID, level: Math.round(100 * (s.audio ? s.audio.audioLevel : 0)) },
        { uid: this.uid, level: Math.round(100 * (s.localAudioLevel || 0)) },
      ]);
    }
  }

  /** Call statistics (updated every second), as Agora's AgoraRTCStats. */
  getRTCStats() {
    const s = this._lastStats;
    return {
      Duration: this.#joinedAt && this.connectionState === "CONNECTED" ? Math.round((performance.now() - this.#joinedAt) / 1000) : 0,
      RecvBitrate: s ? Math.round(s.recvBitrate) : 0,
      RecvBytes: s ? s.recvBytes : 0,
      SendBitrate: s ? Math.round(s.sendBitrate) : 0,
      SendBytes: s ? s.sendBytes : 0,
      UserCount: this.connectionState === "CONNECTED" ? this.remoteUsers.length + 1 : 0,
      RTT: s && s.rttMs != null ? Math.round(s.rttMs) : 0,
      OutgoingAvailableBandwidth: s && s.availableOutgoingBitrate ? s.availableOutgoingBitrate / 1000 : 0,
    };
  }

  /** The avatar's video statistics by uid, as Agora's RemoteVideoTrackStats. */
  getRemoteVideoStats() {
    const v = this._lastStats && this._lastStats.video;
    if (!v) return {};
    return {
      [AVATAR_UID]: {
        codecType: (v.codec || "VP8").toUpperCase(),
        receiveBitrate: Math.round(v.bitrate),
        receiveBytes: v.bytes,
        receiveFrameRate: Math.round(v.fps),
        decodeFrameRate: Math.round(v.fps),
        renderFrameRate: Math.round(v.fps),
        receivePackets: v.packets,
        receivePacketsLost: v.lost,
        packetLossRate: v.lossPct,
        receiveResolutionWidth: v.width,
        receiveResolutionHeight: v.height,
        receiveDelay: Math.round(v.jitterBufferMs),
        transportDelay: this._lastStats.rttMs != null ? Math.round(this._lastStats.rttMs / 2) : 0,
        end2EndDelay: Math.round(v.jitterBufferMs + (this._lastStats.rttMs || 0) / 2),
        totalDuration: Math.round((performance.now() - this.#joinedAt) / 1000),
        totalFreezeTime: Math.round(v.freezeMs / 1000),
        freezeRate: 0,
      },
    };
  }

  /** The avatar's audio statistics by uid, as Agora's RemoteAudioTrackStats. */
  getRemoteAudioStats() {
    const a = this._lastStats && this._lastStats.audio;
    if (!a) return {};
    return {
      [AVATAR_UID]: {
        codecType: (a.codec || "opus").toLowerCase() === "opus" ? "opus" : a.codec,
        receiveBitrate: Math.round(a.bitrate),
        receiveBytes: a.bytes,
        receiveLevel: Math.round(32767 * a.audioLevel),
        receivePackets: a.packets,
        receivePacketsLost: a.lost,
        packetLossRate: a.lossPct,
        receiveDelay: Math.round(a.jitterBufferMs),
        transportDelay: this._lastStats.rttMs != null ? Math.round(this._lastStats.rttMs / 2) : 0,
        end2EndDelay: Math.round(a.jitterBufferMs + (this._lastStats.rttMs || 0) / 2),
        totalDuration: Math.round((performance.now() - this.#joinedAt) / 1000),
        totalFreezeTime: 0,
        freezeRate: 0,
      },
    };
  }

  /** Network quality of the remote users by uid. */
  getRemoteNetworkQuality() {
    const s = this._lastStats;
    const q = s ? qualityOf(s.rttMs, 0) : 0;
    return this.remoteUsers.length ? { [AVATAR_UID]: { uplinkNetworkQuality: q, downlinkNetworkQuality: q } } : {};
  }

  getLocalAudioStats() {
    const s = this._lastStats;
    return { sendBytes: s && s.outAudio ? s.outAudio.bytes : 0, sendPackets: s && s.outAudio ? s.outAudio.packets : 0, sendVolumeLevel: Math.round(32767 * ((s && s.localAudioLevel) || 0)) };
  }

  getLocalVideoStats() {
    const s = this._lastStats;
    return { sendBytes: s && s.outVideo ? s.outVideo.bytes : 0, sendPackets: s && s.outVideo ? s.outVideo.packets : 0 };
  }

  async setClientRole(role) {
    if (role && role !== "host") noteNoOp(`setClientRole("${role}")`);
  }

  async renewToken() {
    noteNoOp("renewToken", "the join token is only needed to join");
  }

  async enableDualStream() {
    noteNoOp("enableDualStream");
  }

  async setRemoteVideoStreamType() {
    noteNoOp("setRemoteVideoStreamType", "the avatar sends one stream");
  }
}

function microphoneConstraints(config = {}) {
  const audio = {
    echoCancellation: config.AEC ?? true,
    noiseSuppression: config.ANS ?? true,
    autoGainControl: config.AGC ?? true,
  };
  if (config.microphoneId) audio.deviceId = { exact: config.microphoneId };
  return audio;
}

function cameraConstraints(config = {}) {
  const video = videoConstraints(config.encoderConfig);
  if (config.cameraId) video.deviceId = { exact: config.cameraId };
  if (config.facingMode) video.facingMode = config.facingMode;
  return video;
}

async function devices(kind) {
  const all = await navigator.mediaDevices.enumerateDevices();
  return kind ? all.filter((d) => d.kind === kind) : all;
}

const events = new ArgsEmitter();

/** The AgoraRTC namespace (default export). */
const AgoraRTC = {
  VERSION: "4.20.0-liveavatar",
  onAutoplayFailed: null,
  onCameraChanged: null,
  onMicrophoneChanged: null,
  onPlaybackDeviceChanged: null,

  /** A client for one channel (here: one liveavatar session). */
  createClient(config = {}) {
    return new Client(config);
  },

  /** Capture the microphone; config AEC / ANS / AGC (default on) and microphoneId as in Agora. */
  async createMicrophoneAudioTrack(config = {}) {
    const audio = microphoneConstraints(config);
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    return new LocalTrack(stream.getAudioTracks()[0], audio);
  },

  /** Capture a camera; config cameraId, facingMode, encoderConfig {width, height, frameRate}. */
  async createCameraVideoTrack(config = {}) {
    const video = cameraConstraints(config);
    const stream = await navigator.mediaDevices.getUserMedia({ audio: false, video: Object.keys(video).length ? video : true });
    return new LocalTrack(stream.getVideoTracks()[0], video);
  },

  async createMicrophoneAndCameraTracks(audioConfig = {}, videoConfig = {}) {
    return [await AgoraRTC.createMicrophoneAudioTrack(audioConfig), await AgoraRTC.createCameraVideoTrack(videoConfig)];
  },

  getDevices: () => devices(),
  getCameras: () => devices("videoinput"),
  getMicrophones: () => devices("audioinput"),
  getPlaybackDevices: () => devices("audiooutput"),

  checkSystemRequirements() {
    return typeof RTCPeerConnection !== "undefined" && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  },

  async getSupportedCodec() {
    return { video: ["VP8"], audio: ["OPUS"] };
  },

  /** Extensions (AI denoiser, virtual background) are accepted and not run. */
  registerExtensions(extensions) {
    noteNoOp(`registerExtensions(${(extensions || []).length} extension(s))`, "extensions are not run with liveavatar");
  },

  setLogLevel() {},
  enableLogUpload() {},
  disableLogUpload() {},
  setParameter() {},
  setArea() {
    noteNoOp("setArea", "liveavatar is reached at the URL in the credentials");
  },

  on: (event, listener) => events.on(event, listener),
  off: (event, listener) => events.off(event, listener),
};

if (typeof navigator !== "undefined" && navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
  navigator.mediaDevices.addEventListener("devicechange", () => events.emit("devicechange"));
}

export { AgoraRTC, Client as AgoraRTCClient };
export default AgoraRTC;
