// Tencent TRTC Web SDK v5 (trtc-sdk-v5) shape over liveavatar, the subset AKool's guide and demo use:
//
//   import TRTC from "https://avatar.example.com/web/compat/trtc.js";   // was "trtc-sdk-v5"
//   const trtc = TRTC.create();
//   trtc.on(TRTC.EVENT.REMOTE_VIDEO_AVAILABLE, ({ userId, streamType }) => trtc.startRemoteVideo({ userId, streamType, view: "video" }));
//   trtc.on(TRTC.EVENT.CUSTOM_MESSAGE, ({ data }) => handle(new TextDecoder().decode(data)));
//   await trtc.enterRoom({ sdkAppId: c.trtc_sdk_app_id, roomId: c.trtc_sdk_room_id, userId: c.trtc_sdk_user_id, userSig: c.trtc_sdk_user_sig });
//
// It joins liveavatar (a session created with stream_type "trtc"), not Tencent's cloud. The avatar is the
// remote user "avatar"; its audio plays by itself, as TRTC's does. Custom messages keep TRTC's limits:
// at most 1 KB each, 30 per second and 8 KB per second (faster sends wait their turn, never dropped).

import { PROFILES } from "../liveavatar.js";
import {
  ArgsEmitter,
  deliverable,
  LiveAvatarSession,
  joinCredentials,
  noteNoOp,
  playTrack,
  qualityOf,
  resolveElement,
  sampleStats,
  stopElement,
  toBytes,
  renderOptions,
} from "./common.js";

export const AVATAR_USER_ID = "avatar";
const LIMITS = PROFILES.trtc;

const EVENT = Object.freeze({
  ERROR: "error",
  AUTOPLAY_FAILED: "autoplay-failed",
  KICKED_OUT: "kicked-out",
  REMOTE_USER_ENTER: "remote-user-enter",
  REMOTE_USER_EXIT: "remote-user-exit",
  REMOTE_AUDIO_AVAILABLE: "remote-audio-available",
  REMOTE_AUDIO_UNAVAILABLE: "remote-audio-unavailable",
  REMOTE_VIDEO_AVAILABLE: "remote-video-available",
  REMOTE_VIDEO_UNAVAILABLE: "remote-video-unavailable",
  AUDIO_VOLUME: "audio-volume",
  NETWORK_QUALITY: "network-quality",
  CONNECTION_STATE_CHANGED: "connection-state-changed",
  AUDIO_PLAY_STATE_CHANGED: "audio-play-state-changed",
  VIDEO_PLAY_STATE_CHANGED: "video-play-state-changed",
  SCREEN_SHARE_STOPPED: "screen-share-stopped",
  DEVICE_CHANGED: "device-changed",
  PUBLISH_STATE_CHANGED: "publish-state-changed",
  STATISTICS: "statistics",
  CUSTOM_MESSAGE: "custom-message",
});

const TYPE = Object.freeze({
  SCENE_LIVE: "live",
  SCENE_RTC: "rtc",
  ROLE_ANCHOR: "anchor",
  ROLE_AUDIENCE: "audience",
  STREAM_TYPE_MAIN: "main",
  STREAM_TYPE_SUB: "sub",
  AUDIO_PROFILE_STANDARD: "standard",
  AUDIO_PROFILE_STANDARD_STEREO: "standard-stereo",
  AUDIO_PROFILE_HIGH: "high",
  AUDIO_PROFILE_HIGH_STEREO: "high-stereo",
  QOS_PREFERENCE_SMOOTH: "smooth",
  QOS_PREFERENCE_CLEAR: "clear",
});

const ERROR_CODE = Object.freeze({
  INVALID_PARAMETER: 5000,
  INVALID_OPERATION: 5100,
  ENV_NOT_SUPPORTED: 5200,
  DEVICE_ERROR: 5300,
  SERVER_ERROR: 5400,
  OPERATION_FAILED: 5500,
  OPERATION_ABORT: 5998,
  UNKNOWN_ERROR: 5999,
});

/** TRTC's RtcError: numeric `code`, `functionName`, `message`. */
export class RtcError extends Error {
  constructor(code, functionName, message, cause) {
    super(message);
    this.name = "RtcError";
    this.code = code;
    this.extraCode = cause && typeof cause.code === "number" ? cause.code : undefined;
    this.functionName = functionName;
    this.cause = cause;
  }
}

async function devices(kind) {
  return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === kind);
}

/** One TRTC instance: one liveavatar session. */
export default class TRTC extends ArgsEmitter {
  static EVENT = EVENT;
  static TYPE = TYPE;
  static ERROR_CODE = ERROR_CODE;
  static VERSION = "5.8.0-liveavatar";

  /** A new instance (`options` are accepted for compatibility). */
  static create(options = {}) {
    return new TRTC(options);
  }

  static async isSupported() {
    const ok = typeof RTCPeerConnection !== "undefined";
    return { result: ok, detail: { isBrowserSupported: ok, isWebRTCSupported: ok, isMediaDevicesSupported: !!navigator.mediaDevices, isH264DecodeSupported: false, isVp8DecodeSupported: ok } };
  }

  static getCameraList() {
    return devices("videoinput");
  }

  static getMicrophoneList() {
    return devices("audioinput");
  }

  static getSpeakerList() {
    return devices("audiooutput");
  }

  static setLogLevel() {}

  static enableUploadLog() {}

  static disableUploadLog() {}

  _session = null;
  #state = "DISCONNECTED";
  #remote = {};
  #announced = false;
  #videoViews = new Map(); // streamType -> element
  #audioElement = null;
  #autoReceiveAudio = true;
  #localAudio = null; // {track, owned}
  #localVideo = null; // {track, owned, element}
  #timer = null;
  #stats = null;
  #ticks = 0;
  #volumeEvery = 0;
  #volumeTimer = null;
  #seq = 0;

  constructor(options = {}) {
    super();
    this.options = options;
  }

  /** on(event, handler, context): context is `this` inside the handler. */
  on(event, handler, context) {
    const bound = context ? handler.bind(context) : handler;
    if (context) bound.original = handler;
    super.on(event, bound);
    if (event === EVENT.REMOTE_VIDEO_AVAILABLE && this._session && !this.#announced) setTimeout(() => this.#announce(), 0);
    return this;
  }

  /**
   * Join the session.
   * @param {{sdkAppId: string, userId: string, userSig: string, roomId?: string|number, strRoomId?: string,
   *   autoReceiveAudio?: boolean}} params sdkAppId: the liveavatar server's URL; roomId / strRoomId: the
   *   session id; userSig: the join token (all from the session's trtc credentials)
   */
  async enterRoom(params = {}) {
    const { sdkAppId, userId, userSig, roomId, strRoomId } = params;
    if (this.#state !== "DISCONNECTED") throw new RtcError(ERROR_CODE.INVALID_OPERATION, "enterRoom", `already ${this.#state}`);
    const sessionId = strRoomId ?? (roomId === undefined ? undefined : String(roomId));
    if (!sessionId || !userSig) throw new RtcError(ERROR_CODE.INVALID_PARAMETER, "enterRoom", "roomId (or strRoomId) and userSig are required");
    let credentials;
    try {
      credentials = joinCredentials(String(sdkAppId), sessionId, userSig);
    } catch (err) {
      throw new RtcError(ERROR_CODE.INVALID_PARAMETER, "enterRoom", err.msg || err.message, err);
    }
    this.userId = userId;
    this.#autoReceiveAudio = params.autoReceiveAudio !== false;
    const session = new LiveAvatarSession();
    this._session = session;
    this.#announced = false;
    this.#setState("CONNECTING");
    session.on("track", ({ track }) => {
      this.#remote[track.kind] = track;
    });
    session.on("stream-message", ({ raw, message }) => {
      const data = new TextEncoder().encode(deliverable(raw, message)).buffer;
      this.emit(EVENT.CUSTOM_MESSAGE, { userId: AVATAR_USER_ID, cmdId: 1, seq: ++this.#seq, data });
    });
    session.on("connection-state", ({ state, reason }) => this.#onSessionState(session, state, reason));
    try {
      const render = renderOptions(this.options); // TRTC.create({liveavatarRender: "client", liveavatarCanvas})
      await session.connect(credentials, { microphone: "muted", camera: "muted", profile: "trtc", ...render });
    } catch (err) {
      if (this._session === session) {
        this._session = null;
        this.#setState("DISCONNECTED");
      }
      throw new RtcError(err.code === 1101 ? ERROR_CODE.INVALID_PARAMETER : ERROR_CODE.SERVER_ERROR, "enterRoom", err.msg || err.message, err);
    }
    this.#setState("CONNECTED");
    this.#timer = setInterval(() => this.#tick(), 1000);
    setTimeout(() => this.#announce(), 0);
  }

  #announce() {
    if (this.#announced || !this._session || this.#state !== "CONNECTED") return;
    this.#announced = true;
    this.emit(EVENT.REMOTE_USER_ENTER, { userId: AVATAR_USER_ID });
    if (this.#remote.audio) {
      if (this.#autoReceiveAudio) this.#playRemoteAudio();
      this.emit(EVENT.REMOTE_AUDIO_AVAILABLE, { userId: AVATAR_USER_ID });
    }
    if (this.#remote.video) this.emit(EVENT.REMOTE_VIDEO_AVAILABLE, { userId: AVATAR_USER_ID, streamType: TYPE.STREAM_TYPE_MAIN });
  }

  #playRemoteAudio() {
    if (this.#audioElement || !this.#remote.audio) return;
    this.#audioElement = playTrack(this.#remote.audio, null);
    this.#audioElement.play().catch(() => this.emit(EVENT.AUTOPLAY_FAILED, { userId: AVATAR_USER_ID }));
  }

  #onSessionState(session, state, reason) {
    if (session !== this._session || this.#state === "CONNECTING") return;
    if (state === "disconnected") this.#setState("RECONNECTING");
    else if (state === "connected" && this.#state === "RECONNECTING") this.#setState("CONNECTED");
    else if (state === "failed" || (state === "closed" && reason === "remote")) {
      if (this.#announced) {
        if (this.#remote.video) this.emit(EVENT.REMOTE_VIDEO_UNAVAILABLE, { userId: AVATAR_USER_ID, streamType: TYPE.STREAM_TYPE_MAIN });
        if (this.#remote.audio) this.emit(EVENT.REMOTE_AUDIO_UNAVAILABLE, { userId: AVATAR_USER_ID });
        this.emit(EVENT.REMOTE_USER_EXIT, { userId: AVATAR_USER_ID });
      }
      this.#end();
      if (state === "failed") this.emit(EVENT.ERROR, new RtcError(ERROR_CODE.SERVER_ERROR, "enterRoom", "the connection failed"));
    }
  }

  #end() {
    clearInterval(this.#timer);
    clearInterval(this.#volumeTimer);
    this.#timer = null;
    this.#volumeTimer = null;
    for (const element of this.#videoViews.values()) stopElement(element);
    this.#videoViews.clear();
    stopElement(this.#audioElement);
    this.#audioElement = null;
    const session = this._session;
    this._session = null;
    this.#remote = {};
    if (session) session.close();
    this.#setState("DISCONNECTED");
  }

  #setState(state) {
    if (state === this.#state) return;
    const prevState = this.#state;
    this.#state = state;
    this.emit(EVENT.CONNECTION_STATE_CHANGED, { prevState, state });
  }

  /** Leave the room (close the session itself through the REST API); local capture stops. */
  async exitRoom() {
    await this.stopLocalAudio();
    await this.stopLocalVideo();
    this.#end();
  }

  /** exitRoom and drop every listener. */
  destroy() {
    this.exitRoom();
    this.removeAllListeners();
  }

  /** Show the avatar's video in `view` (an element or its id). */
  async startRemoteVideo({ userId = AVATAR_USER_ID, streamType = TYPE.STREAM_TYPE_MAIN, view, option = {} } = {}) {
    if (userId !== AVATAR_USER_ID || !this.#remote.video) {
      throw new RtcError(ERROR_CODE.INVALID_OPERATION, "startRemoteVideo", `user ${userId} has no ${streamType} video`);
    }
    stopElement(this.#videoViews.get(streamType));
    const fit = option.fillMode === "contain" ? "contain" : option.fillMode === "fill" ? "fill" : "cover";
    this.#videoViews.set(streamType, playTrack(this.#remote.video, resolveElement(view) || view || null, { fit, mirror: !!option.mirror }));
  }

  async updateRemoteVideo({ streamType = TYPE.STREAM_TYPE_MAIN, view, option = {} } = {}) {
    if (view) await this.startRemoteVideo({ userId: AVATAR_USER_ID, streamType, view, option });
  }

  async stopRemoteVideo({ streamType = TYPE.STREAM_TYPE_MAIN } = {}) {
    stopElement(this.#videoViews.get(streamType));
    this.#videoViews.delete(streamType);
  }

  /** Mute or unmute the avatar's sound. */
  async muteRemoteAudio(_userId, mute) {
    if (mute) {
      stopElement(this.#audioElement);
      this.#audioElement = null;
    } else {
      this.#playRemoteAudio();
    }
  }

  /** 0..100 */
  setRemoteAudioVolume(_userId, volume) {
    if (this.#audioElement) this.#audioElement.volume = Math.max(0, Math.min(100, volume)) / 100;
  }

  /**
   * Send a custom message to the avatar: at most 1 KB, 30 per second, 8 KB per second.
   * @param {{cmdId: number, data: ArrayBuffer}} message
   */
  sendCustomMessage({ cmdId, data } = {}) {
    if (!this._session || this.#state !== "CONNECTED") {
      throw new RtcError(ERROR_CODE.INVALID_OPERATION, "sendCustomMessage", "not in a room");
    }
    if (!Number.isInteger(cmdId) || cmdId < 1 || cmdId > 10) {
      throw new RtcError(ERROR_CODE.INVALID_PARAMETER, "sendCustomMessage", "cmdId must be an integer from 1 to 10");
    }
    let bytes;
    try {
      bytes = toBytes(data);
    } catch (err) {
      throw new RtcError(ERROR_CODE.INVALID_PARAMETER, "sendCustomMessage", err.message);
    }
    if (bytes.length > LIMITS.maxMessageBytes) {
      throw new RtcError(ERROR_CODE.INVALID_PARAMETER, "sendCustomMessage", `message is ${bytes.length} bytes; the limit is ${LIMITS.maxMessageBytes}`);
    }
    const sent = this._session.sendRawMessage(bytes);
    sent.catch(() => {}); // callers that do not await must not see an unhandled rejection
    return sent;
  }

  /** Capture and send the microphone; option.microphoneId / option.audioTrack as in TRTC. */
  async startLocalAudio({ option = {} } = {}) {
    if (!this._session) throw new RtcError(ERROR_CODE.INVALID_OPERATION, "startLocalAudio", "enter the room first");
    let track = option.audioTrack || null;
    const owned = !track;
    if (!track) {
      const audio = {
        echoCancellation: option.echoCancellation ?? true,
        noiseSuppression: option.noiseSuppression ?? true,
        autoGainControl: option.autoGainControl ?? true,
      };
      if (option.microphoneId) audio.deviceId = { exact: option.microphoneId };
      try {
        track = (await navigator.mediaDevices.getUserMedia({ audio, video: false })).getAudioTracks()[0];
      } catch (err) {
        throw new RtcError(ERROR_CODE.DEVICE_ERROR, "startLocalAudio", err.message, err);
      }
    }
    if (this.#localAudio && this.#localAudio.owned) this.#localAudio.track.stop();
    this.#localAudio = { track, owned, options: option };
    await this._session.setMicrophoneTrack(track);
  }

  /** Mute / unmute (the track keeps capturing) or switch the microphone. */
  async updateLocalAudio({ mute, option = {} } = {}) {
    if (!this.#localAudio) throw new RtcError(ERROR_CODE.INVALID_OPERATION, "updateLocalAudio", "startLocalAudio first");
    if (option.microphoneId) await this.startLocalAudio({ option: { ...this.#localAudio.options, ...option } });
    if (mute !== undefined) this.#localAudio.track.enabled = !mute;
  }

  async stopLocalAudio() {
    if (!this.#localAudio) return;
    if (this._session) await this._session.setMicrophoneTrack(null);
    if (this.#localAudio.owned) this.#localAudio.track.stop();
    this.#localAudio = null;
  }

  /** Capture and send the camera (for "vision"), previewed in `view` when given. */
  async startLocalVideo({ view, option = {} } = {}) {
    if (!this._session) throw new RtcError(ERROR_CODE.INVALID_OPERATION, "startLocalVideo", "enter the room first");
    let track = option.videoTrack || null;
    const owned = !track;
    if (!track) {
      const video = {};
      if (option.cameraId) video.deviceId = { exact: option.cameraId };
      if (option.useFrontCamera !== undefined) video.facingMode = option.useFrontCamera ? "user" : "environment";
      try {
        track = (await navigator.mediaDevices.getUserMedia({ audio: false, video: Object.keys(video).length ? video : true })).getVideoTracks()[0];
      } catch (err) {
        throw new RtcError(ERROR_CODE.DEVICE_ERROR, "startLocalVideo", err.message, err);
      }
    }
    await this.stopLocalVideo();
    const element = view ? playTrack(track, resolveElement(view) || view, { mirror: option.mirror !== false }) : null;
    this.#localVideo = { track, owned, element, options: option };
    await this._session.setCameraTrack(track);
  }

  async updateLocalVideo({ view, mute, option = {} } = {}) {
    if (!this.#localVideo) throw new RtcError(ERROR_CODE.INVALID_OPERATION, "updateLocalVideo", "startLocalVideo first");
    if (option.cameraId || option.useFrontCamera !== undefined) {
      await this.startLocalVideo({ view: view || (this.#localVideo.element && this.#localVideo.element.parentElement), option: { ...this.#localVideo.options, ...option } });
    }
    if (mute !== undefined) this.#localVideo.track.enabled = !mute;
  }

  async stopLocalVideo() {
    if (!this.#localVideo) return;
    if (this._session) await this._session.setCameraTrack(null);
    stopElement(this.#localVideo.element);
    if (this.#localVideo.owned) this.#localVideo.track.stop();
    this.#localVideo = null;
  }

  /** AUDIO_VOLUME events every `interval` ms ({result: [{userId, volume 0-100}]}; the local user's id is ""). */
  enableAudioVolumeEvaluation(interval = 2000) {
    this.#volumeEvery = interval > 0 ? Math.max(100, interval) : 0;
    clearInterval(this.#volumeTimer);
    if (this.#volumeEvery) this.#volumeTimer = setInterval(() => this.#volumes(), this.#volumeEvery);
  }

  async #volumes() {
    if (!this._session) return;
    this.#stats = await sampleStats(this._session.pc, this.#stats);
    const s = this.#stats;
    this.emit(EVENT.AUDIO_VOLUME, {
      result: [
        { userId: "", volume: Math.round(100 * (s.localAudioLevel || 0)) },
        { userId: AVATAR_USER_ID, volume: Math.round(100 * (s.audio ? s.audio.audioLevel : 0)) },
      ],
    });
  }

  async #tick() {
    if (!this._session || ++this.#ticks % 2) return;
    this.#stats = await sampleStats(this._session.pc, this.#stats);
    const s = this.#stats;
    const loss = s.video ? s.video.lossPct : 0;
    this.emit(EVENT.NETWORK_QUALITY, {
      uplinkNetworkQuality: qualityOf(s.rttMs, 0),
      downlinkNetworkQuality: qualityOf(s.rttMs, loss),
      uplinkRTT: Math.round(s.rttMs || 0),
      downlinkRTT: Math.round(s.rttMs || 0),
      uplinkLoss: 0,
      downlinkLoss: Math.round(loss),
    });
  }

  /** Plugins (AI denoiser, beauty, virtual background) are accepted and not run. */
  async startPlugin(name) {
    noteNoOp(`startPlugin("${name}")`, "plugins are not run with liveavatar");
  }

  async updatePlugin(name) {
    noteNoOp(`updatePlugin("${name}")`, "plugins are not run with liveavatar");
  }

  async stopPlugin(name) {
    noteNoOp(`stopPlugin("${name}")`, "plugins are not run with liveavatar");
  }

  getAudioTrack() {
    return this.#localAudio ? this.#localAudio.track : null;
  }

  getVideoTrack() {
    return this.#localVideo ? this.#localVideo.track : null;
  }
}

export { TRTC, EVENT, TYPE, ERROR_CODE };
