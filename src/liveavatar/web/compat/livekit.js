// LiveKit client SDK (livekit-client) shape over liveavatar, the subset AKool's guide and demo use:
//
//   import { Room, RoomEvent, Track } from "https://avatar.example.com/web/compat/livekit.js";  // was "livekit-client"
//   const room = new Room();
//   room.on(RoomEvent.TrackSubscribed, (track) => track.kind === Track.Kind.Video && track.attach(videoEl));
//   await room.connect(credentials.livekit_url, credentials.livekit_token);
//
// It joins liveavatar (a session created with stream_type "livekit"), not a LiveKit server. The avatar is
// the remote participant "avatar". Data messages keep LiveKit's reliable limit of 15 KiB per message.

import { PROFILES } from "../liveavatar.js";
import {
  ArgsEmitter,
  deliverable,
  LiveAvatarSession,
  MessageBytes,
  joinCredentials,
  noteNoOp,
  qualityOf,
  sampleStats,
  toBytes,
  tokenSession,
  renderOptions,
} from "./common.js";

export const AVATAR_IDENTITY = "avatar";
const LIMITS = PROFILES.livekit;

export const RoomEvent = Object.freeze({
  Connected: "connected",
  Reconnecting: "reconnecting",
  Reconnected: "reconnected",
  Disconnected: "disconnected",
  ConnectionStateChanged: "connectionStateChanged",
  ParticipantConnected: "participantConnected",
  ParticipantDisconnected: "participantDisconnected",
  TrackPublished: "trackPublished",
  TrackSubscribed: "trackSubscribed",
  TrackUnsubscribed: "trackUnsubscribed",
  TrackUnpublished: "trackUnpublished",
  TrackMuted: "trackMuted",
  TrackUnmuted: "trackUnmuted",
  LocalTrackPublished: "localTrackPublished",
  LocalTrackUnpublished: "localTrackUnpublished",
  ActiveSpeakersChanged: "activeSpeakersChanged",
  DataReceived: "dataReceived",
  ConnectionQualityChanged: "connectionQualityChanged",
  MediaDevicesError: "mediaDevicesError",
  AudioPlaybackStatusChanged: "audioPlaybackChanged",
});

export const ConnectionState = Object.freeze({
  Disconnected: "disconnected",
  Connecting: "connecting",
  Connected: "connected",
  Reconnecting: "reconnecting",
});

export const DisconnectReason = Object.freeze({
  UNKNOWN_REASON: 0,
  CLIENT_INITIATED: 1,
  DUPLICATE_IDENTITY: 2,
  SERVER_SHUTDOWN: 3,
  PARTICIPANT_REMOVED: 4,
  ROOM_DELETED: 5,
  STATE_MISMATCH: 6,
  JOIN_FAILURE: 7,
});

export const DataPacket_Kind = Object.freeze({ RELIABLE: 0, LOSSY: 1 });

export const ConnectionQuality = Object.freeze({
  Excellent: "excellent",
  Good: "good",
  Poor: "poor",
  Lost: "lost",
  Unknown: "unknown",
});

/** A media track (LiveKit's Track): `kind`, `source`, `mediaStreamTrack`, attach() / detach(). */
export class Track {
  static Kind = Object.freeze({ Audio: "audio", Video: "video", Unknown: "unknown" });
  static Source = Object.freeze({
    Camera: "camera",
    Microphone: "microphone",
    ScreenShare: "screen_share",
    ScreenShareAudio: "screen_share_audio",
    Unknown: "unknown",
  });

  attachedElements = [];
  isMuted = false;

  constructor(mediaStreamTrack, source) {
    this.mediaStreamTrack = mediaStreamTrack;
    this.kind = mediaStreamTrack.kind;
    this.source = source;
    this.sid = `TR_${mediaStreamTrack.id}`;
  }

  /** Play in `element` (a new <video>/<audio> element when not given, not yet in the page); returns it. */
  attach(element) {
    const el = element || document.createElement(this.kind === "video" ? "video" : "audio");
    el.autoplay = true;
    el.playsInline = true;
    if (this.kind === "video") el.muted = true;
    el.srcObject = new MediaStream([this.mediaStreamTrack]);
    if (!this.attachedElements.includes(el)) this.attachedElements.push(el);
    el.play().catch((err) => console.warn(`liveavatar compat: ${this.kind} autoplay was blocked`, err));
    return el;
  }

  /** Stop playing in `element` (every element when not given); returns the elements detached. */
  detach(element) {
    const gone = element ? this.attachedElements.filter((e) => e === element) : [...this.attachedElements];
    for (const el of gone) {
      el.srcObject = null;
    }
    this.attachedElements = this.attachedElements.filter((e) => !gone.includes(e));
    return element ? gone[0] : gone;
  }

  stop() {
    this.detach();
  }
}

class TrackPublication {
  constructor(track, participant) {
    this.track = track;
    this.kind = track.kind;
    this.source = track.source;
    this.trackSid = track.sid;
    this.trackName = track.source;
    this.participant = participant;
    this.isSubscribed = true;
    this.isMuted = false;
  }
}

class Participant extends ArgsEmitter {
  trackPublications = new Map();
  isSpeaking = false;
  audioLevel = 0;
  connectionQuality = ConnectionQuality.Unknown;

  constructor(identity) {
    super();
    this.identity = identity;
    this.name = identity;
    this.sid = `PA_${identity}`;
    this.metadata = undefined;
  }

  get audioTrackPublications() {
    return new Map([...this.trackPublications].filter(([, p]) => p.kind === "audio"));
  }

  get videoTrackPublications() {
    return new Map([...this.trackPublications].filter(([, p]) => p.kind === "video"));
  }

  getTrackPublication(source) {
    return [...this.trackPublications.values()].find((p) => p.source === source);
  }

  getTrackPublications() {
    return [...this.trackPublications.values()];
  }
}

/** The local participant: publishData, setMicrophoneEnabled, setCameraEnabled. */
class LocalParticipant extends Participant {
  #room;

  constructor(identity, room) {
    super(identity);
    this.#room = room;
  }

  get isMicrophoneEnabled() {
    const pub = this.getTrackPublication(Track.Source.Microphone);
    return !!pub && pub.track.mediaStreamTrack.readyState === "live" && pub.track.mediaStreamTrack.enabled;
  }

  get isCameraEnabled() {
    return !!this.getTrackPublication(Track.Source.Camera);
  }

  /**
   * Send data to the avatar: reliable (default) up to 15 KiB per message.
   * @param {Uint8Array|string} data
   * @param {{reliable?: boolean, topic?: string, destinationIdentities?: string[]}|number} [options]
   *   an options object, or (older SDKs) a DataPacket_Kind
   */
  async publishData(data, options = {}) {
    const session = this.#room._session;
    if (!session || this.#room.state !== ConnectionState.Connected) throw new Error("cannot publish data: the room is not connected");
    const reliable = typeof options === "number" ? options === DataPacket_Kind.RELIABLE : options.reliable !== false;
    const bytes = toBytes(data);
    if (bytes.length > LIMITS.maxMessageBytes) {
      throw new Error(`data packet of ${bytes.length} bytes exceeds the ${LIMITS.maxMessageBytes}-byte limit`);
    }
    if (!reliable) noteNoOp("publishData({reliable: false})", "data always goes reliably here");
    await session.sendRawMessage(bytes);
  }

  /** Capture and send the microphone, or stop it; options as getUserMedia audio constraints. */
  async setMicrophoneEnabled(enabled, captureOptions = {}) {
    return this.#setSource(Track.Source.Microphone, enabled, captureOptions);
  }

  /** Capture and send the camera (for "vision"), or stop it. */
  async setCameraEnabled(enabled, captureOptions = {}) {
    return this.#setSource(Track.Source.Camera, enabled, captureOptions);
  }

  async #setSource(source, enabled, captureOptions) {
    const session = this.#room._session;
    if (!session) throw new Error("the room is not connected");
    const audio = source === Track.Source.Microphone;
    const existing = this.getTrackPublication(source);
    if (enabled && existing) return existing;
    if (!enabled) {
      if (!existing) return undefined;
      if (audio) await session.setMicrophoneTrack(null);
      else await session.setCameraTrack(null);
      existing.track.mediaStreamTrack.stop();
      this.trackPublications.delete(existing.trackSid);
      this.#room.emit(RoomEvent.LocalTrackUnpublished, existing, this);
      return existing;
    }
    const defaults = (audio ? this.#room.options.audioCaptureDefaults : this.#room.options.videoCaptureDefaults) || {};
    const constraints = { ...defaults, ...captureOptions };
    if (constraints.deviceId && typeof constraints.deviceId === "string") constraints.deviceId = { exact: constraints.deviceId };
    const hasAny = Object.keys(constraints).length > 0;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(audio ? { audio: hasAny ? constraints : true } : { video: hasAny ? constraints : true });
    } catch (err) {
      this.#room.emit(RoomEvent.MediaDevicesError, err);
      throw err;
    }
    const mediaTrack = audio ? stream.getAudioTracks()[0] : stream.getVideoTracks()[0];
    if (audio) await session.setMicrophoneTrack(mediaTrack);
    else await session.setCameraTrack(mediaTrack);
    const publication = new TrackPublication(new Track(mediaTrack, source), this);
    this.trackPublications.set(publication.trackSid, publication);
    this.#room.emit(RoomEvent.LocalTrackPublished, publication, this);
    return publication;
  }

  async setScreenShareEnabled() {
    noteNoOp("setScreenShareEnabled", "the avatar does not watch screens");
  }
}

/** A room: one liveavatar session. */
export class Room extends ArgsEmitter {
  state = ConnectionState.Disconnected;
  remoteParticipants = new Map();
  name = "";
  canPlaybackAudio = true;
  _session = null;

  #remoteTracks = {};
  #announced = false;
  #timer = null;
  #stats = null;
  #ticks = 0;

  /** @param {object} [options] livekit RoomOptions; audioCaptureDefaults / videoCaptureDefaults are used */
  constructor(options = {}) {
    super();
    this.options = { ...options };
    this.localParticipant = new LocalParticipant("", this);
  }

  /** The remote participants (older SDKs' name). */
  get participants() {
    return this.remoteParticipants;
  }

  on(event, listener) {
    super.on(event, listener);
    if (event === RoomEvent.TrackSubscribed && this._session && !this.#announced) setTimeout(() => this.#announce(), 0);
    return this;
  }

  /**
   * Join the session.
   * @param {string} url credentials.livekit_url (the liveavatar server's URL)
   * @param {string} token credentials.livekit_token (the join token)
   */
  async connect(url, token, _options = {}) {
    if (this.state !== ConnectionState.Disconnected) throw new Error(`cannot connect: the room is ${this.state}`);
    const sessionId = tokenSession(token);
    const credentials = joinCredentials(url, sessionId, token);
    const session = new LiveAvatarSession();
    this._session = session;
    this.#announced = false;
    this.#setState(ConnectionState.Connecting);
    session.on("track", ({ track }) => {
      this.#remoteTracks[track.kind] = track;
    });
    session.on("stream-message", ({ raw, message }) => {
      const participant = this.remoteParticipants.get(AVATAR_IDENTITY);
      const payload = new MessageBytes(new TextEncoder().encode(deliverable(raw, message)));
      this.emit(RoomEvent.DataReceived, payload, participant, DataPacket_Kind.RELIABLE, undefined);
    });
    session.on("connection-state", ({ state, reason }) => this.#onSessionState(session, state, reason));
    try {
      const render = renderOptions(this.options); // new Room({liveavatarRender: "client", liveavatarCanvas})
      await session.connect(credentials, { microphone: "muted", camera: "muted", profile: "livekit", ...render });
    } catch (err) {
      if (this._session === session) {
        this._session = null;
        this.#setState(ConnectionState.Disconnected);
      }
      throw err;
    }
    this.name = sessionId;
    this.localParticipant.identity = `client-${sessionId}`;
    this.localParticipant.name = this.localParticipant.identity;
    const avatar = new Participant(AVATAR_IDENTITY);
    this.remoteParticipants.set(AVATAR_IDENTITY, avatar);
    this.#setState(ConnectionState.Connected);
    this.emit(RoomEvent.Connected);
    this.emit(RoomEvent.ParticipantConnected, avatar);
    this.#timer = setInterval(() => this.#tick(), 1000);
    setTimeout(() => this.#announce(), 0);
  }

  #announce() {
    const avatar = this.remoteParticipants.get(AVATAR_IDENTITY);
    if (this.#announced || !avatar || this.state !== ConnectionState.Connected) return;
    if (this.listenerCount(RoomEvent.TrackSubscribed) === 0) return; // told when the first listener arrives
    this.#announced = true;
    for (const kind of ["video", "audio"]) {
      const mediaTrack = this.#remoteTracks[kind];
      if (!mediaTrack) continue;
      const track = new Track(mediaTrack, kind === "video" ? Track.Source.Camera : Track.Source.Microphone);
      const publication = new TrackPublication(track, avatar);
      avatar.trackPublications.set(publication.trackSid, publication);
      this.emit(RoomEvent.TrackPublished, publication, avatar);
      this.emit(RoomEvent.TrackSubscribed, track, publication, avatar);
    }
  }

  #onSessionState(session, state, reason) {
    if (session !== this._session || this.state === ConnectionState.Connecting) return;
    if (state === "disconnected") {
      this.#setState(ConnectionState.Reconnecting);
      this.emit(RoomEvent.Reconnecting);
    } else if (state === "connected" && this.state === ConnectionState.Reconnecting) {
      this.#setState(ConnectionState.Connected);
      this.emit(RoomEvent.Reconnected);
    } else if (state === "failed" || (state === "closed" && reason === "remote")) {
      this.#end(state === "failed" ? DisconnectReason.UNKNOWN_REASON : DisconnectReason.ROOM_DELETED);
    }
  }

  #end(reason) {
    clearInterval(this.#timer);
    this.#timer = null;
    const avatar = this.remoteParticipants.get(AVATAR_IDENTITY);
    if (avatar) {
      for (const publication of avatar.trackPublications.values()) {
        publication.track.detach();
        this.emit(RoomEvent.TrackUnsubscribed, publication.track, publication, avatar);
      }
      this.remoteParticipants.delete(AVATAR_IDENTITY);
      this.emit(RoomEvent.ParticipantDisconnected, avatar);
    }
    for (const publication of this.localParticipant.trackPublications.values()) publication.track.mediaStreamTrack.stop();
    this.localParticipant.trackPublications.clear();
    const session = this._session;
    this._session = null;
    this.#remoteTracks = {};
    if (session) session.close();
    this.#setState(ConnectionState.Disconnected);
    this.emit(RoomEvent.Disconnected, reason);
  }

  /** Leave the room (close the session itself through the REST API). */
  async disconnect() {
    if (this.state === ConnectionState.Disconnected) return;
    this.#end(DisconnectReason.CLIENT_INITIATED);
  }

  /** Resume audio playback after an autoplay block (call from a user gesture). */
  async startAudio() {
    const avatar = this.remoteParticipants.get(AVATAR_IDENTITY);
    const elements = avatar ? [...avatar.trackPublications.values()].flatMap((p) => p.track.attachedElements) : [];
    await Promise.all(elements.map((el) => el.play().catch(() => {})));
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit(RoomEvent.ConnectionStateChanged, state);
  }

  async #tick() {
    if (!this._session) return;
    this.#stats = await sampleStats(this._session.pc, this.#stats);
    const avatar = this.remoteParticipants.get(AVATAR_IDENTITY);
    if (!avatar) return;
    const level = this.#stats.audio ? this.#stats.audio.audioLevel : 0;
    const speaking = level > 0.02;
    avatar.audioLevel = level;
    if (speaking !== avatar.isSpeaking) {
      avatar.isSpeaking = speaking;
      this.emit(RoomEvent.ActiveSpeakersChanged, speaking ? [avatar] : []);
    }
    if (++this.#ticks % 2) return;
    const loss = this.#stats.video ? this.#stats.video.lossPct : 0;
    const q = qualityOf(this.#stats.rttMs, loss);
    const quality = q === 0 ? ConnectionQuality.Unknown : q <= 2 ? ConnectionQuality.Excellent : q <= 3 ? ConnectionQuality.Good : ConnectionQuality.Poor;
    if (quality !== this.localParticipant.connectionQuality) {
      this.localParticipant.connectionQuality = quality;
      this.emit(RoomEvent.ConnectionQualityChanged, quality, this.localParticipant);
    }
  }
}

export default { Room, RoomEvent, Track, ConnectionState, DisconnectReason, DataPacket_Kind, ConnectionQuality };
