// The avatar drawn in the browser for a client-rendered session (render: "client"): the animation channel's
// messages in, the avatar's web pack fetched once per avatar, one frame drawn per display refresh at the
// audio position the user hears (interpolated between the stream's frames).

import { decode, PlayoutClock, Timeline } from "./animation.js";
import { DEFAULT_BACKGROUND, loadWebPack, webgl2Supported, WebGLRenderer } from "./webgl-renderer.js";

export { webgl2Supported as clientRenderSupported };

const REST = { mouth: [0, 0, 0, 0, 0], blink: 0, yaw: 0, pitch: 0, roll: 0, dx: 0, dy: 0, brows: 0, smile: 0 };

export class ClientRender {
  /**
   * @param {object} options
   * @param {HTMLCanvasElement} options.canvas where the avatar is drawn
   * @param {string} options.baseUrl the API server (web pack paths in HELLO are relative to it)
   * @param {Record<string, string>} options.headers credentials for the web pack (the join token)
   * @param {() => RTCRtpReceiver|null} options.receiver the avatar's audio receiver
   * @param {(err: Error) => void} [options.onError]
   * @param {(info: object) => void} [options.onHello]
   */
  constructor({ canvas, baseUrl, headers, receiver, onError = () => {}, onHello = () => {} }) {
    this.canvas = canvas;
    this.baseUrl = baseUrl;
    this.headers = headers;
    this.onError = onError;
    this.onHello = onHello;
    this.timeline = new Timeline();
    this.clock = new PlayoutClock(receiver);
    this.renderer = null;
    this.video = null;
    this.packUrl = null;
    this.last = REST;
    this.stats = { messages: 0, drawn: 0, position: null, source: "none", hello: null };
    this.running = true;
    /** false: keep following the stream and the clock but draw nothing (e.g. while the canvas is hidden). */
    this.drawing = true;
    this.jitterTimer = setInterval(() => this.clock.refreshJitter().catch(() => {}), 1000);
    this.frame = this.frame.bind(this);
    requestAnimationFrame(this.frame);
  }

  /** One message from the `liveavatar-animation` channel (an ArrayBuffer). */
  handle(data) {
    let msg;
    try {
      msg = decode(data);
    } catch (err) {
      this.onError(err);
      return;
    }
    this.stats.messages++;
    if (msg.type === "hello") {
      this.clock.setHello(msg);
      this.stats.hello = msg;
      this.#load(msg).catch((err) => this.onError(err));
      this.onHello(msg);
    } else if (msg.type === "frames") {
      this.timeline.add(msg);
      this.clock.sawFrames(msg.firstPosition, this.timeline);
    } else if (msg.type === "cut") {
      this.timeline.cut(msg.position);
    }
  }

  async #load(hello) {
    const path = hello.info.web_pack || `/api/open/v3/avatar/web-pack/${hello.info.avatar_id}`;
    const url = new URL(path, this.baseUrl).href;
    const background = hello.info.background;
    // an image or video backdrop is a layer behind the transparent canvas (a cross-origin image without CORS
    // headers cannot be a texture); null: the pack's own colour
    const color = background && background.url ? null : (background && background.color) || DEFAULT_BACKGROUND;
    this.#backdrop(background && background.url ? background : null);
    if (url === this.packUrl && this.renderer) {
      this.renderer.setBackground(color);
      return;
    }
    this.packUrl = url;
    const pack = await loadWebPack(url, { headers: this.headers });
    if (!this.running) return;
    if (this.renderer) this.renderer.destroy();
    this.renderer = new WebGLRenderer(this.canvas, pack, { background: color });
  }

  #backdrop(background) {
    const canvas = this.canvas;
    if (this.video) {
      this.video.remove();
      this.video = null;
    }
    canvas.style.background = "";
    if (!background) return;
    if (background.video) {
      const video = document.createElement("video");
      Object.assign(video, { src: background.url, loop: true, muted: true, autoplay: true, playsInline: true });
      video.className = canvas.className;
      video.style.objectFit = "cover";
      canvas.before(video);
      video.play().catch(() => {});
      this.video = video;
    } else {
      canvas.style.background = `center / cover no-repeat url(${JSON.stringify(background.url)})`;
    }
  }

  frame() {
    if (!this.running) return;
    requestAnimationFrame(this.frame);
    if (!this.renderer || !this.drawing) return;
    const position = this.clock.position(this.timeline);
    const state = position === null ? null : this.timeline.stateAt(position);
    if (state) this.last = state;
    this.stats.position = position;
    this.stats.source = this.clock.source;
    this.renderer.render(this.last);
    this.stats.drawn++;
  }

  /** The state drawn last (for tests and meters). */
  get state() {
    return this.last;
  }

  /** The state for what the user hears now (what the next frame will draw); null before the stream starts. */
  stateNow() {
    const position = this.clock.position(this.timeline);
    return position === null ? null : this.timeline.stateAt(position);
  }

  close() {
    this.running = false;
    clearInterval(this.jitterTimer);
    this.#backdrop(null);
    if (this.renderer) this.renderer.destroy();
    this.renderer = null;
  }
}
