// The liveavatar demo page: pick an avatar, go live, chat with it.
//
// Element ids (stable; the browser test and your own scripts may target them):
//   #api-key, #key-form, #key-apply   API key field (remembered in localStorage) and its "Use key" button
//   #avatar-list                      avatar picker; each choice is button.avatar-option[data-avatar-id]
//   #voice, #language, #mode          selects; changed while live, they send set-params
//   #start, #stop, #mic, #interrupt   session controls (#mic has aria-pressed)
//   #stage                            video container; data-state = empty | ready | connecting | live,
//                                     class is-speaking between audio_start and audio_end
//   #video, #poster, #unmute          the avatar's <video>, its idle picture, an unmute button if autoplay was blocked
//   #stats, #stat-rtt, #stat-fps, #stat-bitrate, #stat-loss   live connection stats (every second)
//   #status, #status-text             header status: data-state = offline | connecting | live | error
//   #info-session, #info-transport, #info-first-frame   session details (first frame: ms from posting the offer)
//   #error, #error-text               error banner (the server's msg for a failed call)
//   #chat-log                         messages: .msg.user, .msg.bot (data-mid, .streaming until fin), .msg.system
//   #chat-form, #chat-input, #send    the text box and its Send button
//   #client-render, #avatar-canvas    "rendered in your browser" (render: "client": WebGL2 draws the avatar in the
//                                     canvas, the <video> only plays the voice); disabled without WebGL2
//
// URL parameters: ?mic=1 joins with the microphone on; ?aec=0 turns off echo cancellation, noise
// suppression and auto gain (for test signals); ?profile=agora|trtc|livekit|webrtc picks the chunk limits;
// ?render=client ticks "rendered in your browser".
//
// Debug hook: window.__liveavatar = {lib, session, acks, messages, firstFrameMs, state}; `acks` lists
// every command ack {mid, cmd, code, msg}, `messages` every incoming stream message.
//
// This page calls the REST API from the browser with your key, which suits a demo on your own machine.
// A real app creates sessions in its backend and gives the browser only the session's credentials.

import * as lib from "./liveavatar.js";

const { LiveAvatarSession, createSession, closeSession, listAvatars, listVoices, listLanguages } = lib;
const { clientRenderSupported } = lib;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const BASE = location.origin;
const KEY_STORAGE = "liveavatar.apiKey";
const MODE_HINTS = {
  1: "Retelling: the avatar speaks exactly what you type.",
  2: "Dialogue: the avatar answers you, using its language model.",
};

const debug = { lib, session: null, acks: [], messages: [], firstFrameMs: null, state: "offline" };
window.__liveavatar = debug;

const ui = {
  key: "", // the key the catalog was loaded with
  avatars: [],
  avatarId: null,
  micWanted: params.get("mic") === "1",
  session: null,
  sessionId: null,
  sessionKey: null,
  statsTimer: null,
  clockTimer: null,
  reconnectTimer: null,
  liveSince: 0,
  duration: 0,
};

// --- small helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function describe(err) {
  if (err && err.name === "NotAllowedError") return "The browser blocked the microphone or camera.";
  if (err && err.msg) return err.code > 0 ? `${err.msg} (code ${err.code})` : err.msg;
  return (err && err.message) || String(err);
}

function showError(err) {
  $("error-text").textContent = typeof err === "string" ? err : describe(err);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function setStatus(state, text) {
  debug.state = state;
  $("status").dataset.state = state;
  $("status-text").textContent = text;
}

function fmtClock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// --- chat log --------------------------------------------------------------------------------------

const bubbles = new Map(); // "bot:<mid>" / "user:<mid>" -> element

function appendToLog(node) {
  const log = $("chat-log");
  log.querySelector(".chat-empty")?.remove();
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(node);
  if (atBottom) log.scrollTop = log.scrollHeight;
  return node;
}

function addMessage(kind, text, extra = {}) {
  const cls = ["msg", kind, ...(extra.classes || [])].join(" ");
  const bubble = el("div", { class: cls, ...(extra.mid ? { dataset: { mid: extra.mid } } : {}) }, text);
  if (kind !== "bot") return appendToLog(bubble);
  // The avatar's answers sit next to its picture, like a messenger.
  const avatar = ui.avatars.find((a) => a.avatar_id === ui.avatarId);
  const picture = el("img", { class: "msg-avatar", alt: "", src: avatar ? avatar.thumbnailUrl || avatar.url : "" });
  appendToLog(el("div", { class: "msg-row" }, picture, bubble));
  return bubble;
}

function systemMessage(text, tone = "") {
  return addMessage("system", text, { classes: tone ? [tone] : [] });
}

function streamText(kind, { mid, text, fin }) {
  const key = `${kind}:${mid}`;
  let bubble = bubbles.get(key);
  if (!bubble) {
    bubble = addMessage(kind, "", { mid, classes: kind === "user" ? ["voice"] : [] });
    bubbles.set(key, bubble);
  }
  const log = $("chat-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  bubble.textContent = text;
  bubble.classList.toggle("streaming", !fin);
  if (fin) bubbles.delete(key);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// --- catalog ---------------------------------------------------------------------------------------

function selectAvatar(avatarId) {
  ui.avatarId = avatarId;
  for (const button of $("avatar-list").querySelectorAll(".avatar-option")) {
    button.setAttribute("aria-checked", String(button.dataset.avatarId === avatarId));
  }
  const avatar = ui.avatars.find((a) => a.avatar_id === avatarId);
  $("poster").src = avatar ? avatar.url : "";
  $("ready-title").textContent = avatar ? `${avatar.name} is ready` : "Ready";
}

function renderAvatars(avatars) {
  const list = $("avatar-list");
  list.replaceChildren();
  if (!avatars.length) {
    list.append(el("div", { class: "placeholder" }, "No avatars are installed on this server."));
    return;
  }
  for (const avatar of avatars) {
    const button = el(
      "button",
      { type: "button", class: "avatar-option", role: "radio", "aria-checked": "false", title: avatar.name, dataset: { avatarId: avatar.avatar_id } },
      el("img", { src: avatar.thumbnailUrl || avatar.url, alt: "", loading: "lazy" }),
      el("span", {}, avatar.name || avatar.avatar_id),
    );
    button.addEventListener("click", () => selectAvatar(avatar.avatar_id));
    list.append(button);
  }
}

function renderVoices(voices) {
  const select = $("voice");
  select.replaceChildren(el("option", { value: "" }, "Default voice"));
  const groups = new Map();
  for (const voice of voices) {
    const label = voice.engine === "piper" ? "Natural voices" : voice.engine === "espeak" ? "eSpeak NG voices" : "Voices";
    if (!groups.has(label)) groups.set(label, el("optgroup", { label }));
    const locale = voice.locale || voice.language;
    groups.get(label).append(el("option", { value: voice.voice_id }, locale ? `${voice.name} · ${locale}` : voice.name));
  }
  select.append(...groups.values());
  select.disabled = false;
}

function renderLanguages(languages) {
  const select = $("language");
  select.replaceChildren(el("option", { value: "" }, "Automatic"));
  for (const lang of languages) select.append(el("option", { value: lang.lang_code }, lang.lang_name));
  select.disabled = false;
}

async function loadCatalog(key) {
  clearError();
  $("key-apply").disabled = true;
  try {
    const [avatars, voices, languages] = await Promise.all([
      listAvatars(BASE, key),
      listVoices(BASE, key),
      listLanguages(BASE, key),
    ]);
    ui.key = key;
    ui.avatars = avatars;
    localStorage.setItem(KEY_STORAGE, key);
    renderAvatars(avatars);
    renderVoices(voices);
    renderLanguages(languages);
    const keep = avatars.some((a) => a.avatar_id === ui.avatarId) ? ui.avatarId : avatars[0]?.avatar_id;
    selectAvatar(keep ?? null);
    if (!ui.session) {
      setStatus("offline", "Offline");
      setIdle();
    }
  } catch (err) {
    ui.key = "";
    showError(err);
    setStatus("error", "Key not accepted");
    $("start").disabled = true;
  } finally {
    $("key-apply").disabled = false;
  }
}

// --- session ---------------------------------------------------------------------------------------

function setIdle() {
  const ready = Boolean(ui.key && ui.avatarId);
  $("stage").dataset.state = ready ? "ready" : "empty";
  $("stage").classList.remove("is-speaking");
  if (debug.state !== "error") setStatus("offline", "Offline");
  for (const id of ["info-session", "info-transport", "info-first-frame"]) $(id).textContent = "–";
  $("start").hidden = false;
  $("start").disabled = !ready;
  $("stop").hidden = true;
  $("interrupt").disabled = true;
  $("chat-input").blur();
  $("chat-input").disabled = true;
  $("chat-input").placeholder = "Start a session to chat…";
  $("send").disabled = true;
  for (const node of $("avatar-list").querySelectorAll(".avatar-option")) node.disabled = false;
  $("unmute").hidden = true;
  renderMic();
}

function setLive() {
  $("stage").dataset.state = "live";
  $("interrupt").disabled = false;
  $("chat-input").disabled = false;
  $("chat-input").placeholder = "Type a message and press Enter…";
  $("send").disabled = false;
  $("chat-input").focus();
  ui.liveSince = performance.now();
  tickClock();
}

function tickClock() {
  if (!ui.session || ui.session.state !== "connected") return;
  const left = ui.duration - (performance.now() - ui.liveSince) / 1000;
  setStatus("live", ui.duration ? `Live · ${fmtClock(left)} left` : "Live");
}

function renderMic() {
  const session = ui.session;
  const on = session ? session.microphoneEnabled : ui.micWanted;
  $("mic").setAttribute("aria-pressed", String(on));
  $("mic-label").textContent = on ? "Mic on" : "Mic off";
  $("mic").disabled = Boolean(session && !session.microphoneAvailable);
}

function sessionParams() {
  return {
    avatar_id: ui.avatarId,
    voice_id: $("voice").value,
    language: $("language").value,
    mode_type: Number($("mode").value),
    duration: 600,
    stream_type: "webrtc", // this page joins with liveavatar's own client
    ...(clientRendered() ? { render: "client" } : {}),
  };
}

/** Whether this session is drawn in the browser ("rendered in your browser" ticked and WebGL2 there). */
function clientRendered() {
  return $("client-render").checked && clientRenderSupported();
}

function wireSession(session) {
  session.on("track", ({ stream }) => {
    const video = $("video");
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      video.play().catch(() => {
        // Autoplay with sound was refused: play muted and offer to unmute.
        video.muted = true;
        $("unmute").hidden = false;
        video.play().catch(() => {});
      });
    }
  });
  session.on("connection-state", ({ state, reason }) => {
    if (session !== ui.session) return;
    clearTimeout(ui.reconnectTimer);
    if (state === "failed") endSession("The connection failed.");
    else if (state === "closed" && reason === "remote") endSession("The session ended.");
    else if (state === "disconnected" && ui.liveSince) {
      // Give a flaky network a few seconds to recover before giving up.
      setStatus("connecting", "Reconnecting…");
      ui.reconnectTimer = setTimeout(() => session === ui.session && endSession("The connection was lost."), 8000);
    } else if (state === "connected" && ui.liveSince) tickClock();
  });
  session.on("stream-message", ({ message }) => debug.messages.push(message));
  session.on("command-ack", (ack) => debug.acks.push(ack));
  session.on("bot-text", (chunk) => streamText("bot", chunk));
  session.on("user-text", (chunk) => streamText("user", chunk));
  session.on("audio-start", () => $("stage").classList.add("is-speaking"));
  session.on("audio-end", () => $("stage").classList.remove("is-speaking"));
  session.on("error", (err) => showError(err));
  session.on("microphone", renderMic);
}

function watchFirstFrame(session) {
  const video = $("video");
  if (clientRendered()) {
    // the first frame is the first one the canvas draws
    const poll = () => {
      if (session !== ui.session) return;
      const drawn = session.clientRender && session.clientRender.stats.drawn > 0;
      if (!drawn) return void requestAnimationFrame(poll);
      debug.firstFrameMs = Math.round(performance.now() - session.timings.offerPosted);
      $("info-first-frame").textContent = `${debug.firstFrameMs} ms after the offer (drawn here)`;
      setLive();
    };
    requestAnimationFrame(poll);
    return;
  }
  const onFrame = () => {
    if (session !== ui.session) return;
    debug.firstFrameMs = Math.round(performance.now() - session.timings.offerPosted);
    $("info-first-frame").textContent = `${debug.firstFrameMs} ms after the offer`;
    setLive();
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  else video.addEventListener("playing", onFrame, { once: true });
}

async function start() {
  if (!ui.avatarId || ui.session) return;
  clearError();
  const key = ui.key;
  const audioProcessing = params.get("aec") === "0" ? { echoCancellation: false, noiseSuppression: false, autoGainControl: false } : {};
  const session = new LiveAvatarSession({ audioProcessing });
  ui.session = session;
  debug.session = session;
  debug.firstFrameMs = null;
  wireSession(session);
  $("start").hidden = true;
  $("stop").hidden = false;
  $("stage").dataset.state = "connecting";
  $("connecting-text").textContent = "Creating session…";
  for (const node of $("avatar-list").querySelectorAll(".avatar-option")) node.disabled = true;
  setStatus("connecting", "Connecting");
  try {
    const info = await createSession(BASE, key, sessionParams());
    ui.sessionId = info._id;
    ui.sessionKey = key;
    ui.duration = info.duration || 0;
    $("info-session").textContent = info._id;
    $("info-session").title = info._id;
    const profile = params.get("profile");
    $("info-transport").textContent = (info.stream_type || "webrtc") + (profile ? ` · ${profile} chunks` : "");
    if (session !== ui.session) return;
    $("connecting-text").textContent = "Connecting…";
    watchFirstFrame(session);
    const client = clientRendered();
    $("avatar-canvas").hidden = !client;
    $("video").hidden = client; // still plays the voice
    await session.connect(info.credentials, {
      microphone: ui.micWanted ? true : "muted",
      profile: params.get("profile") || "webrtc",
      ...(client ? { render: "client", canvas: $("avatar-canvas") } : {}),
    });
    renderMic();
    systemMessage("Session started");
    setTimeout(() => {
      if (session === ui.session && $("stage").dataset.state === "connecting") {
        showError("Connected, but no video has arrived yet. Check the server's log.");
      }
    }, 10000);
    clearInterval(ui.statsTimer);
    ui.statsTimer = setInterval(updateStats, 1000);
    clearInterval(ui.clockTimer);
    ui.clockTimer = setInterval(tickClock, 1000);
  } catch (err) {
    if (session !== ui.session) return;
    await endSession(null);
    showError(err);
    setStatus("error", "Could not start");
  }
}

async function endSession(note) {
  const session = ui.session;
  if (!session) return;
  ui.session = null;
  ui.liveSince = 0;
  clearInterval(ui.statsTimer);
  clearInterval(ui.clockTimer);
  clearTimeout(ui.reconnectTimer);
  ui.lastDrawn = null;
  session.close();
  const video = $("video");
  video.pause();
  video.srcObject = null;
  video.hidden = false;
  $("avatar-canvas").hidden = true;
  for (const bubble of bubbles.values()) bubble.classList.remove("streaming");
  bubbles.clear();
  if (note) systemMessage(note);
  setIdle();
  const id = ui.sessionId;
  ui.sessionId = null;
  if (id) {
    try {
      await closeSession(BASE, ui.sessionKey, id);
    } catch (err) {
      console.warn("liveavatar demo: closing the session failed", err);
    }
  }
}

async function updateStats() {
  const session = ui.session;
  if (!session) return;
  let stats;
  try {
    stats = await session.getStats();
  } catch {
    return; // closed meanwhile
  }
  if (session !== ui.session) return;
  const fmt = (value, digits, unit) => (value == null || !Number.isFinite(value) ? "–" : `${value.toFixed(digits)}${unit}`);
  $("stat-rtt").textContent = stats.rttMs != null && stats.rttMs < 1 ? "<1 ms" : fmt(stats.rttMs, stats.rttMs < 10 ? 1 : 0, " ms");
  const drawn = session.clientRender ? session.clientRender.stats.drawn : null;
  if (drawn !== null) {
    // drawn here: frames drawn per second instead of video frames received
    const now = performance.now();
    const last = ui.lastDrawn || { drawn, at: now - 1000 };
    stats.fps = ((drawn - last.drawn) * 1000) / Math.max(now - last.at, 1);
    ui.lastDrawn = { drawn, at: now };
  }
  $("stat-fps").textContent = fmt(stats.fps, 0, "");
  $("stat-bitrate").textContent = stats.bitrateKbps != null && stats.bitrateKbps >= 1000 ? fmt(stats.bitrateKbps / 1000, 1, " Mbps") : fmt(stats.bitrateKbps, 0, " kbps");
  $("stat-loss").textContent = fmt(stats.packetLossPct, 1, "%");
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || !ui.session) return;
  input.value = "";
  addMessage("user", text);
  try {
    await ui.session.chat(text);
  } catch (err) {
    showError(err);
  }
}

async function interrupt() {
  if (!ui.session) return;
  try {
    await ui.session.interrupt();
    for (const bubble of bubbles.values()) bubble.classList.add("interrupted");
    systemMessage("Interrupted", "ok");
  } catch (err) {
    showError(err);
  }
}

async function toggleMic() {
  if (!ui.session) {
    ui.micWanted = !ui.micWanted;
    renderMic();
    return;
  }
  try {
    await ui.session.setMicrophone(!ui.session.microphoneEnabled);
  } catch (err) {
    showError(err);
  }
  renderMic();
}

/** While live, a changed setting goes to the avatar as set-params; the ack is shown in the chat. */
async function applySetting(select, label, data) {
  if (!ui.session || ui.session.state !== "connected") return;
  const shown = select.selectedOptions[0]?.textContent || select.value;
  try {
    const ack = await ui.session.setParams(data);
    systemMessage(`${label}: ${shown} — applied (${ack.code})`, "ok");
  } catch (err) {
    systemMessage(`${label}: ${shown} — ${describe(err)}`, "err");
  }
}

function renderMode() {
  const mode = $("mode").value;
  $("mode-hint").textContent = MODE_HINTS[mode];
  $("chat-mode").textContent = mode === "2" ? "Dialogue" : "Retelling";
}

// --- wiring ----------------------------------------------------------------------------------------

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) loadCatalog(key);
  else showError("Enter an API key.");
});
$("api-key").addEventListener("change", () => {
  const key = $("api-key").value.trim();
  if (key && key !== ui.key) loadCatalog(key);
});
$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => endSession("Session ended"));
$("interrupt").addEventListener("click", interrupt);
$("mic").addEventListener("click", toggleMic);
$("chat-form").addEventListener("submit", sendChat);
$("chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) sendChat(event);
});
$("error-close").addEventListener("click", clearError);
$("unmute").addEventListener("click", () => {
  $("video").muted = false;
  $("unmute").hidden = true;
});
$("voice").addEventListener("change", (e) => applySetting(e.target, "Voice", { vparams: { vid: e.target.value } }));
$("language").addEventListener("change", (e) => applySetting(e.target, "Language", { lang: e.target.value }));
if (!clientRenderSupported()) {
  $("client-render").disabled = true;
  $("client-render-hint").textContent = "This browser has no WebGL2: the server draws the avatar.";
}
$("client-render").checked = params.get("render") === "client" && clientRenderSupported();

$("mode").addEventListener("change", (e) => {
  renderMode();
  applySetting(e.target, "Mode", { mode: Number(e.target.value) });
});
window.addEventListener("pagehide", () => {
  // Free the server's slot at once; keepalive lets the request outlive the page.
  if (!ui.sessionId) return;
  fetch(`${BASE}/api/open/v4/liveAvatar/session/close`, {
    method: "POST",
    keepalive: true,
    headers: { "content-type": "application/json", "x-api-key": ui.sessionKey },
    body: JSON.stringify({ id: ui.sessionId }),
  }).catch(() => {});
});

renderMode();
renderMic();
const savedKey = params.get("key") || localStorage.getItem(KEY_STORAGE) || "";
if (savedKey) {
  $("api-key").value = savedKey;
  loadCatalog(savedKey);
}
