// liveavatar WebGL2 renderer: draws an avatar's web pack for a FaceState, as render/renderer.py does.
//
//   import { loadWebPack, WebGLRenderer, webgl2Supported } from "/web/webgl-renderer.js";
//   if (!webgl2Supported()) useServerVideo();
//   const pack = await loadWebPack(url, { headers: { Authorization: `Bearer ${joinToken}` } });
//   const renderer = new WebGLRenderer(canvas, pack, { background: "#5b6b7c" });
//   renderer.render({ mouth: [0.6, 0, 0, 0, 0], blink: 0, yaw: 3, pitch: 0, roll: 0, dx: 0, dy: 0, brows: 0, smile: 0 });
//
// The same maths as the Python renderer: the head's rigid motion and breathing, depth parallax for yaw and
// pitch, the mouth and brow fields inverted by the same fixed-point iteration on the same coarse grid (full
// resolution around the parted lips), closed-lid patches drawn into the source, bilinear sampling with
// OpenCV's 1/32-pixel positions. The mouth interior (dark fill, tongue, upper teeth) uses the same shapes and
// colours; its masks' blurs are computed analytically or by sampling instead of OpenCV's Gaussian filters.

const MAGIC = 0x5057414c; // "LAWP" little-endian
const WEB_PACK_VERSION = 1;
const MOUTH_BASES = ["jaw_open", "lips_wide", "lips_round", "lips_closed", "lower_lip_tuck"];
export const DEFAULT_BACKGROUND = "#5b6b7c";

let supported = null;

/** True where this browser can draw the avatar itself (WebGL2 with float render targets); probed once. */
export function webgl2Supported() {
  if (supported === null) {
    try {
      const gl = document.createElement("canvas").getContext("webgl2");
      supported = !!gl && !!gl.getExtension("EXT_color_buffer_float");
      if (gl) gl.getExtension("WEBGL_lose_context")?.loseContext(); // browsers cap live contexts
    } catch {
      supported = false;
    }
  }
  return supported;
}

/** Parse a web pack (an ArrayBuffer) into {header, arrays} (typed arrays; float16 stays raw Uint16Array). */
export function parseWebPack(buffer) {
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== MAGIC) throw new Error("not a liveavatar web pack");
  const version = view.getUint32(4, true);
  if (version !== WEB_PACK_VERSION) throw new Error(`web pack version ${version} is not supported`);
  const n = view.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 12, n)));
  const start = 12 + n + ((8 - ((12 + n) % 8)) % 8);
  const kinds = { u8: [Uint8Array, 1], f16: [Uint16Array, 2], f32: [Float32Array, 4] };
  const arrays = {};
  for (const [name, spec] of Object.entries(header.arrays)) {
    const [Type] = kinds[spec.dtype];
    const count = spec.shape.reduce((a, b) => a * b, 1);
    arrays[name] = new Type(buffer, start + spec.offset, count);
  }
  return { header, arrays };
}

/** Fetch and parse an avatar's web pack (`headers`: the join token or API key). */
export async function loadWebPack(url, { headers = {}, fetchImpl = fetch } = {}) {
  const res = await fetchImpl(url, { headers });
  if (!res.ok) throw new Error(`web pack: HTTP ${res.status}`);
  return parseWebPack(await res.arrayBuffer());
}

function parseColor(color) {
  const hex = String(color || DEFAULT_BACKGROUND).replace("#", "");
  const full = hex.length === 3 ? [...hex].map((c) => c + c).join("") : hex.padEnd(6, "0");
  return [0, 2, 4].map((i) => parseInt(full.slice(i, i + 2), 16) || 0);
}

const clampAbs = (v, limit) => Math.min(Math.max(Number(v) || 0, -limit), limit);
const clamp01 = (v) => Math.min(Math.max(Number(v) || 0, 0), 1);
const rad = (deg) => (deg * Math.PI) / 180;
/** Python's round(): halves to even. */
function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
/** Python's // on integers. */
const floorDiv = (a, b) => Math.floor(a / b);

/** The head's rigid motion (render/inverse_warp.py Rigid), band coordinates. */
class Rigid {
  constructor(roll, dx, dy, pivot) {
    const th = rad(roll);
    const c = Math.cos(th);
    const s = Math.sin(th);
    this.m = [c - 1, s, -s, c - 1];
    const [px, py] = pivot;
    this.t = [-(this.m[0] * px + this.m[1] * py) - (c * dx + s * dy), -(this.m[2] * px + this.m[3] * py) - (-s * dx + c * dy)];
  }

  forward([x, y]) {
    const a = 1 + this.m[0], b = this.m[1], c = this.m[2], d = 1 + this.m[3];
    const det = a * d - b * c;
    const u = x - this.t[0], v = y - this.t[1];
    return [(d * u - b * v) / det, (a * v - c * u) / det];
  }
}

function box(pts, margin, width, height) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [x, y] of pts) {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
  }
  return [
    Math.max(Math.floor(x0) - margin, 0),
    Math.max(Math.floor(y0) - margin, 0),
    Math.min(Math.ceil(x1) + margin + 1, width),
    Math.min(Math.ceil(y1) + margin + 1, height),
  ];
}

// ------------------------------------------------------------------ shaders

const VERTEX = `#version 300 es
in vec2 a;
void main() { gl_Position = vec4(a, 0.0, 1.0); }`;

const COMMON = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
precision highp sampler2DArray;
uniform sampler2D uHW;
uniform sampler2D uDepth;
uniform vec4 uM;          // rigid m00 m01 m10 m11
uniform vec2 uT;
uniform float uDy;
uniform float uBandH;      // bottom - top
uniform float uRampDen;    // max(bottom - shoulder_row, 1)
uniform int uParallax;
uniform vec2 uYawPitch;    // radians
uniform ivec4 uDepthRegion; // x0 y0 x1 y1 where the parallax applies
uniform ivec2 uDepthOrigin; // where depth texel (0, 0) lies now
uniform highp sampler2DArray uMouthF;
uniform float uMouthW[7];
uniform int uMouthN;
uniform vec2 uMouthOrigin;
uniform ivec2 uMouthSize;
uniform int uMouthOn;
uniform ivec4 uMouthRegion;
uniform ivec4 uSharp;
uniform int uSharpOn;
uniform sampler2D uMouthD;
uniform highp sampler2DArray uBrowF;
uniform float uBrowW[2];
uniform int uBrowN;
uniform vec2 uBrowOrigin;
uniform ivec2 uBrowSize;
uniform int uBrowOn;
uniform ivec4 uBrowRegion;
uniform sampler2D uBrowD;
uniform int uIterations;

vec2 baseMap(ivec2 p) {
  float x = float(p.x), y = float(p.y);
  float hw = texelFetch(uHW, p, 0).r;
  float body = (1.0 - hw) * clamp((uBandH - y) / uRampDen, 0.0, 1.0);
  vec2 m = vec2(x + hw * (uM.x * x + uM.y * y + uT.x), y + hw * (uM.z * x + uM.w * y + uT.y) - body * uDy);
  if (uParallax == 1 && all(greaterThanEqual(p, uDepthRegion.xy)) && all(lessThan(p, uDepthRegion.zw))) {
    m -= uYawPitch * texelFetch(uDepth, p - uDepthOrigin, 0).r;
  }
  return m;
}

// OpenCV's remap positions: 1/32 pixel, rounded to nearest even
void taps(vec2 s, out ivec2 i0, out vec2 f) {
  ivec2 q = ivec2(roundEven(s * 32.0));
  i0 = q >> 5;
  f = vec2(q & 31) / 32.0;
}

vec2 fieldSum(highp sampler2DArray tex, int n, float w[7], ivec2 size, vec2 s) {
  ivec2 i0; vec2 f;
  taps(s, i0, f);
  ivec2 lo = clamp(i0, ivec2(0), size - 1), hi = clamp(i0 + 1, ivec2(0), size - 1);
  vec2 acc = vec2(0.0);
  for (int k = 0; k < 7; k++) {
    if (k >= n) break;
    if (w[k] == 0.0) continue;
    vec2 a = texelFetch(tex, ivec3(lo.x, lo.y, k), 0).rg;
    vec2 b = texelFetch(tex, ivec3(hi.x, lo.y, k), 0).rg;
    vec2 c = texelFetch(tex, ivec3(lo.x, hi.y, k), 0).rg;
    vec2 d = texelFetch(tex, ivec3(hi.x, hi.y, k), 0).rg;
    acc += w[k] * mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
  }
  return acc;
}

vec2 solveMouth(vec2 q) {
  vec2 s = q;
  for (int i = 0; i < 8; i++) {
    if (i >= uIterations) break;
    s = q - fieldSum(uMouthF, uMouthN, uMouthW, uMouthSize, s);
  }
  return s;
}

vec2 solveBrows(vec2 q) {
  float w[7] = float[7](uBrowW[0], uBrowW[1], 0.0, 0.0, 0.0, 0.0, 0.0);
  vec2 s = q;
  for (int i = 0; i < 8; i++) {
    if (i >= uIterations) break;
    s = q - fieldSum(uBrowF, uBrowN, w, uBrowSize, s);
  }
  return s;
}

// cv2.resize INTER_LINEAR (x4 up) of a coarse delta, at fine pixel p of its region
vec2 upsample(sampler2D tex, ivec4 region, ivec2 p) {
  ivec2 small = (region.zw - region.xy) / 4;
  vec2 s = (vec2(p - region.xy) + 0.5) * 0.25 - 0.5;
  s = clamp(s, vec2(0.0), vec2(small - 1));
  ivec2 i0 = ivec2(floor(s));
  vec2 f = s - vec2(i0);
  ivec2 i1 = min(i0 + 1, small - 1);
  vec2 a = texelFetch(tex, i0, 0).rg, b = texelFetch(tex, ivec2(i1.x, i0.y), 0).rg;
  vec2 c = texelFetch(tex, ivec2(i0.x, i1.y), 0).rg, d = texelFetch(tex, i1, 0).rg;
  return mix(mix(a, b, f.x), mix(c, d, f.x), f.y);
}

bool inside(ivec2 p, ivec4 r) { return all(greaterThanEqual(p, r.xy)) && all(lessThan(p, r.zw)); }

vec2 mouthMap(ivec2 p) {
  vec2 m = baseMap(p);
  if (uMouthOn == 1 && inside(p, uMouthRegion)) {
    if (uSharpOn == 1 && inside(p, uSharp)) return solveMouth(m - uMouthOrigin) + uMouthOrigin;
    m += upsample(uMouthD, uMouthRegion, p);
  }
  return m;
}

vec2 finalMap(ivec2 p) {
  vec2 m = mouthMap(p);
  if (uBrowOn == 1 && inside(p, uBrowRegion)) m += upsample(uBrowD, uBrowRegion, p);
  return m;
}
`;

// one coarse grid cell: INTER_AREA of the maps, then the fixed point, out: solution - start
const COARSE_FS = `${COMMON}
uniform int uStage;   // 0: mouth (from the base maps), 1: brows (from the maps the mouth left)
out vec4 o;
void main() {
  ivec2 c = ivec2(gl_FragCoord.xy);
  ivec4 region = uStage == 0 ? uMouthRegion : uBrowRegion;
  ivec2 p0 = region.xy + c * 4;
  vec2 q = vec2(0.0);
  for (int dy = 0; dy < 4; dy++) for (int dx = 0; dx < 4; dx++) {
    ivec2 p = p0 + ivec2(dx, dy);
    q += uStage == 0 ? baseMap(p) : mouthMap(p);
  }
  q /= 16.0;
  vec2 s;
  if (uStage == 0) { q -= uMouthOrigin; s = solveMouth(q); } else { q -= uBrowOrigin; s = solveBrows(q); }
  o = vec4(s - q, 0.0, 1.0);
}`;

// the source with the closed-lid patches drawn in (band sized)
const WORK_FS = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
uniform sampler2D uSrc;
uniform int uTop;
uniform float uBlink;
uniform ivec4 uEye[2];        // x y w h (band)
uniform sampler2D uLid[2];
uniform sampler2D uLines[2];
uniform vec3 uLash[2];
uniform float uLashBand[2];
out vec4 o;
void main() {
  ivec2 p = ivec2(gl_FragCoord.xy);
  vec4 texel = texelFetch(uSrc, p + ivec2(0, uTop), 0);
  vec3 src = texel.rgb * 255.0;
  vec3 outc = src;
  if (uBlink >= 0.02) {
    float fade = min(uBlink / 0.12, 1.0);
    for (int e = 0; e < 2; e++) {
      ivec4 b = uEye[e];
      ivec2 l = p - b.xy;
      if (b.z == 0 || any(lessThan(l, ivec2(0))) || any(greaterThanEqual(l, b.zw))) continue;
      float yy = float(l.y);
      float upper, closed, lash;
      vec3 lid;
      if (e == 0) {
        upper = texelFetch(uLines[0], ivec2(l.x, 0), 0).r;
        closed = texelFetch(uLines[0], ivec2(l.x, 1), 0).r;
        lash = texelFetch(uLines[0], ivec2(l.x, 2), 0).r;
        lid = texelFetch(uLid[0], l, 0).rgb * 255.0;
      } else {
        upper = texelFetch(uLines[1], ivec2(l.x, 0), 0).r;
        closed = texelFetch(uLines[1], ivec2(l.x, 1), 0).r;
        lash = texelFetch(uLines[1], ivec2(l.x, 2), 0).r;
        lid = texelFetch(uLid[1], l, 0).rgb * 255.0;
      }
      float edge = upper + uBlink * (closed - upper);
      float cover = clamp(edge - yy + 0.5, 0.0, 1.0);
      bool lashBand = yy < upper && yy >= upper - uLashBand[e];
      if (yy < upper) cover = lashBand ? fade : 0.0;
      float shadow = 1.0 - 0.14 * exp(-max(edge - yy, 0.0) / 2.5);
      float lv = lash * exp(-pow((yy - edge + 0.6) / 0.9, 2.0)) * fade;
      vec3 c = src + (lid * shadow - src) * cover;
      c += (uLash[e] - c) * min(lv * 0.95, 1.0);
      outc = c;
    }
  }
  o = vec4(clamp(floor(outc + 0.5), 0.0, 255.0) / 255.0, texel.a);
}`;

const FINAL_FS = `${COMMON}
uniform sampler2D uStatic;
uniform sampler2D uWork;
uniform int uTop;
uniform int uH;
// the mouth interior
uniform int uLipsOn;
uniform vec2 uLips[22];
uniform ivec4 uLipBox;
uniform float uInnerSigma;
uniform vec4 uTongue;        // centre x y, axes a b (band pixels)
uniform vec2 uTongueK;       // blur sigma, strength
uniform vec3 uColInterior;
uniform vec3 uColTongue;
uniform sampler2D uTeeth;
uniform vec4 uMouthFrame;    // centre x y, eu x y
uniform vec4 uTeethK;        // mw, yaw*d, pitch*d, 0.05 * round
uniform vec2 uTeethSpan;
uniform float uSeamU[11];
uniform float uSeamV[11];
out vec4 o;

vec4 sampleWork(vec2 s) {
  ivec2 i0; vec2 f;
  taps(s, i0, f);
  ivec2 size = textureSize(uWork, 0);
  ivec2 lo = clamp(i0, ivec2(0), size - 1), hi = clamp(i0 + 1, ivec2(0), size - 1);
  vec4 a = texelFetch(uWork, lo, 0), b = texelFetch(uWork, ivec2(hi.x, lo.y), 0);
  vec4 c = texelFetch(uWork, ivec2(lo.x, hi.y), 0), d = texelFetch(uWork, hi, 0);
  return mix(mix(a, b, f.x), mix(c, d, f.x), f.y) * 255.0;
}

float segDist(vec2 p, vec2 a, vec2 b) {
  vec2 ab = b - a;
  float t = clamp(dot(p - a, ab) / max(dot(ab, ab), 1e-12), 0.0, 1.0);
  return length(p - a - t * ab);
}

// signed distance to the lips' polygon (positive inside)
float lipsSd(vec2 p) {
  float d = 1e9;
  bool inPoly = false;
  for (int i = 0, j = 21; i < 22; j = i++) {
    vec2 a = uLips[i], b = uLips[j];
    d = min(d, segDist(p, a, b));
    if ((a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x) inPoly = !inPoly;
  }
  return inPoly ? d : -d;
}

float phi(float x) {  // the normal CDF (Abramowitz-Stegun 7.1.26 on erf)
  float z = abs(x) / sqrt(2.0);
  float t = 1.0 / (1.0 + 0.3275911 * z);
  float y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-z * z);
  return 0.5 * (1.0 + sign(x) * y);
}

const float MASK_SIGMA = 0.55;  // fillPoly's anti-aliasing then the 3x3 blur (sigma 0.5)

float coverage(vec2 p) { return phi(lipsSd(p) / MASK_SIGMA); }

float seamAt(float u) {
  if (u <= uSeamU[0]) return uSeamV[0];
  for (int i = 1; i < 11; i++) {
    if (u <= uSeamU[i]) return mix(uSeamV[i - 1], uSeamV[i], (u - uSeamU[i - 1]) / max(uSeamU[i] - uSeamU[i - 1], 1e-12));
  }
  return uSeamV[10];
}

vec4 teethAt(vec2 p) {
  float rx = p.x + uM.x * p.x + uM.y * p.y + uT.x - uTeethK.y - uMouthFrame.x;
  float ry = p.y + uM.z * p.x + uM.w * p.y + uT.y - uTeethK.z - uMouthFrame.y;
  vec2 eu = uMouthFrame.zw;
  float u = (rx * eu.x + ry * eu.y) / uTeethK.x;
  float v = (ry * eu.x - rx * eu.y) / uTeethK.x - seamAt(u) + uTeethK.w;
  ivec2 size = textureSize(uTeeth, 0);
  vec2 s = vec2((u + 0.5) * float(size.x - 1), (v - uTeethSpan.x) / (uTeethSpan.y - uTeethSpan.x) * float(size.y - 1));
  ivec2 i0; vec2 f;
  taps(s, i0, f);
  vec4 acc = vec4(0.0);
  for (int k = 0; k < 4; k++) {
    ivec2 q = i0 + ivec2(k & 1, k >> 1);
    float w = ((k & 1) == 1 ? f.x : 1.0 - f.x) * ((k >> 1) == 1 ? f.y : 1.0 - f.y);
    if (all(greaterThanEqual(q, ivec2(0))) && all(lessThan(q, size))) acc += w * texelFetch(uTeeth, q, 0);
  }
  return acc * 255.0;  // outside the texture: transparent black (BORDER_CONSTANT)
}

vec3 mouthInterior(vec2 p, vec3 base) {
  float m = coverage(p);
  if (m <= 0.0) return base;
  // the cavity is darker toward the lips: the mask blurred by sigma (sampled)
  float inner = 0.0, wsum = 0.0;
  for (int j = -4; j <= 4; j++) for (int i = -4; i <= 4; i++) {
    vec2 off = vec2(float(i), float(j)) * (0.55 * uInnerSigma);
    float w = exp(-0.5 * dot(off, off) / (uInnerSigma * uInnerSigma));
    inner += w * coverage(p + off);
    wsum += w;
  }
  inner /= wsum;
  float lit = phi(lipsSd(p) / sqrt(MASK_SIGMA * MASK_SIGMA + 0.81));
  vec3 col = uColInterior * (0.5 + 0.7 * inner);
  // tongue: the upper half of an ellipse, blurred
  vec2 d = p - uTongue.xy;
  vec2 ab = uTongue.zw;
  float qn = length(d / ab);
  float grad = length(d / (ab * ab)) / max(qn, 1e-6);
  float dEll = qn < 1e-3 ? min(ab.x, ab.y) : (1.0 - qn) / max(grad, 1e-6);
  float sdT = min(dEll, uTongue.y - p.y);
  float t = phi(sdT / sqrt(uTongueK.x * uTongueK.x + 0.09)) * uTongueK.y;
  col = col + (uColTongue * (0.45 + 0.55 * inner) - col) * t;
  vec4 teeth = teethAt(p);
  float a = teeth.a / 255.0;
  col = col + (teeth.rgb * (0.7 + 0.3 * lit) - col) * a;
  return base + (col - base) * m;
}

void main() {
  ivec2 P = ivec2(int(gl_FragCoord.x), uH - 1 - int(gl_FragCoord.y));
  if (P.y < uTop || float(P.y - uTop) >= uBandH) {
    o = texelFetch(uStatic, P, 0);
    return;
  }
  ivec2 p = P - ivec2(0, uTop);
  vec4 w = clamp(floor(sampleWork(finalMap(p)) + 0.5), 0.0, 255.0);
  vec3 c = w.rgb;
  if (uLipsOn == 1 && inside(p, uLipBox)) c = clamp(floor(mouthInterior(vec2(p), c) + 0.5), 0.0, 255.0);
  o = vec4(c, w.a) / 255.0;
}`;

// ------------------------------------------------------------------ the renderer

/** Draws FaceStates of one avatar's web pack into a canvas with WebGL2. */
export class WebGLRenderer {
  /**
   * @param {HTMLCanvasElement} canvas resized to the pack's frame size
   * @param {{header: object, arrays: object}} pack from loadWebPack / parseWebPack
   * @param {{background?: string|null}} [options] a solid background colour ('#rrggbb'), or null: transparent
   *   around the person (premultiplied alpha; put an image or video behind the canvas)
   */
  constructor(canvas, pack, { background = DEFAULT_BACKGROUND } = {}) {
    // readPixels() right after render() (same task) needs no preserved buffer, which would cost a copy per frame
    const gl = canvas.getContext("webgl2", { antialias: false, depth: false, premultipliedAlpha: true, preserveDrawingBuffer: false });
    if (!gl || !gl.getExtension("EXT_color_buffer_float")) throw new Error("WebGL2 with float render targets is not available");
    this.gl = gl;
    this.canvas = canvas;
    this.pack = pack;
    const h = pack.header;
    [this.w, this.h] = h.size;
    this.top = h.band[0];
    this.bh = h.band[1] - h.band[0];
    canvas.width = this.w;
    canvas.height = this.h;
    this.programs = {
      coarse: this.#program(COARSE_FS),
      work: this.#program(WORK_FS),
      final: this.#program(FINAL_FS),
    };
    const quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    this.#upload();
    this.setBackground(background);
  }

  #program(fragment) {
    const gl = this.gl;
    const shader = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(`shader: ${gl.getShaderInfoLog(s)}`);
      return s;
    };
    const p = gl.createProgram();
    gl.attachShader(p, shader(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(p, shader(gl.FRAGMENT_SHADER, fragment));
    gl.bindAttribLocation(p, 0, "a");
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(`program: ${gl.getProgramInfoLog(p)}`);
    const locations = new Map();
    return { p, loc: (name) => (locations.has(name) ? locations.get(name) : locations.set(name, gl.getUniformLocation(p, name)).get(name)) };
  }

  #texture(width, height, internal, format, type, data) {
    const gl = this.gl;
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, t);
    gl.texImage2D(gl.TEXTURE_2D, 0, internal, width, height, 0, format, type, data);
    for (const [k, v] of [
      [gl.TEXTURE_MIN_FILTER, gl.NEAREST],
      [gl.TEXTURE_MAG_FILTER, gl.NEAREST],
      [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE],
      [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE],
    ])
      gl.texParameteri(gl.TEXTURE_2D, k, v);
    return t;
  }

  #array(data, shape) {
    const gl = this.gl;
    const [n, hh, ww] = shape;
    const t = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D_ARRAY, t);
    gl.texImage3D(gl.TEXTURE_2D_ARRAY, 0, gl.RG16F, ww, hh, n, 0, gl.RG, gl.HALF_FLOAT, data);
    gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    return t;
  }

  #target(width, height, internal, format, type) {
    const gl = this.gl;
    const tex = this.#texture(width, height, internal, format, type, null);
    const fb = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tex, 0);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    return { tex, fb };
  }

  #upload() {
    const gl = this.gl;
    const { header: h, arrays: a } = this.pack;
    const spec = (name) => h.arrays[name].shape;
    this.tex = {};
    this.tex.hw = this.#texture(this.w, this.bh, gl.R16F, gl.RED, gl.HALF_FLOAT, a.head_weight);
    const [dh, dw] = spec("depth");
    this.tex.depth = this.#texture(dw, dh, gl.R16F, gl.RED, gl.HALF_FLOAT, a.depth);
    this.tex.mouthF = this.#array(a[h.mouth.array], spec(h.mouth.array));
    this.tex.browF = this.#array(a[h.brows.array], spec(h.brows.array));
    const [th, tw] = spec(h.teeth.array);
    this.tex.teeth = this.#texture(tw, th, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, a[h.teeth.array]);
    this.tex.lids = h.eyes.map((e) => this.#texture(e.w, e.h, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, a[e.lid]));
    this.tex.lines = h.eyes.map((e) => this.#texture(e.w, 3, gl.R32F, gl.RED, gl.FLOAT, a[e.lines]));
    this.work = this.#target(this.w, this.bh, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE);
    const cw = Math.ceil(this.w / 4) + 1, ch = Math.ceil(this.bh / 4) + 1;
    this.mouthD = this.#target(cw, ch, gl.RG32F, gl.RG, gl.FLOAT);
    this.browD = this.#target(cw, ch, gl.RG32F, gl.RG, gl.FLOAT);
    this.tex.static = null;
  }

  /** Draw over another solid colour ('#rrggbb') from the next frame on; null: transparent around the person. */
  setBackground(color) {
    const gl = this.gl;
    const transparent = color === null;
    const bg = transparent ? [0, 0, 0] : parseColor(color);
    const img = this.pack.arrays.image;
    const out = new Uint8Array(this.w * this.h * 4);
    for (let i = 0, n = this.w * this.h; i < n; i++) {
      const alpha = Math.fround(img[4 * i + 3] / 255);
      for (let c = 0; c < 3; c++) {
        const v = Math.fround(Math.fround(img[4 * i + c] * alpha) + Math.fround(bg[c] * Math.fround(1 - alpha)));
        out[4 * i + c] = Math.min(255, Math.floor(v + 0.5));
      }
      out[4 * i + 3] = transparent ? img[4 * i + 3] : 255;
    }
    if (this.tex.static) gl.deleteTexture(this.tex.static);
    this.tex.static = this.#texture(this.w, this.h, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, out);
    this.background = color;
    this.workOpen = false; // the source with open eyes must be redrawn
  }

  /** The per-frame numbers the shaders take, computed as render/renderer.py does. */
  plan(state) {
    const h = this.pack.header;
    const lim = h.limits;
    const mouth = (state.mouth || []).map(clamp01);
    const [jaw, wide, rnd, closed, tuck] = [0, 1, 2, 3, 4].map((i) => mouth[i] || 0);
    const keep = 1 - closed;
    const smile = Number(state.smile) || 0;
    const brows = Number(state.brows) || 0;
    const weights = {
      jaw_open: jaw * keep,
      lips_wide: wide * keep,
      lips_round: rnd * keep,
      lips_closed: closed,
      lower_lip_tuck: tuck * keep,
      smile_up: Math.max(smile, 0),
      smile_down: Math.max(-smile, 0),
      brows_up: Math.max(brows, 0),
      brows_down: Math.max(-brows, 0),
    };
    const yaw = clampAbs(state.yaw, lim.max_turn), pitch = clampAbs(state.pitch, lim.max_turn);
    const roll = clampAbs(state.roll, lim.max_roll);
    const dx = clampAbs(state.dx, lim.max_shift), dy = clampAbs(state.dy, lim.max_shift);
    const rigid = new Rigid(roll, dx, dy, h.pivot);
    // depth parallax, sampled where the face now is (an integer shift)
    let parallax = null;
    if (Math.abs(rad(yaw)) + Math.abs(rad(pitch)) >= 1e-6) {
      const moved = rigid.forward(h.face_centre);
      const sx = pyRound(moved[0] - h.face_centre[0]), sy = pyRound(moved[1] - h.face_centre[1]);
      const [dh, dw] = h.arrays[h.depth.array].shape;
      const [lx0, ly0, lx1, ly1] = h.depth.limit;
      const x0 = h.depth.x, y0 = h.depth.y;
      const ox0 = Math.max(0, x0 + sx, lx0), oy0 = Math.max(0, y0 + sy, ly0);
      const ox1 = Math.min(this.w, x0 + sx + dw, lx1), oy1 = Math.min(this.bh, y0 + sy + dh, ly1);
      if (ox1 > ox0 && oy1 > oy0) parallax = { region: [ox0, oy0, ox1, oy1], origin: [x0 + sx, y0 + sy] };
    }
    // the parted lips now (upper contour, then lower reversed)
    const L = h.lips;
    const lips = L.rest.map(([x, y], i) => {
      let px = x, py = y;
      for (const [name, d] of Object.entries(L.deltas)) {
        const w = weights[name] || 0;
        if (w) { px += w * d[i][0]; py += w * d[i][1]; }
      }
      px += rad(yaw) * L.depth[i];
      py += rad(pitch) * L.depth[i];
      return rigid.forward([px, py]);
    });
    const sharp = box(lips, 2 * h.solver.coarse, this.w, this.bh);
    const solve = (group) => {
      const ws = group.names.map((n) => weights[n] || 0);
      const active = ws.map((w, i) => [w, i]).filter(([w]) => Math.abs(w) > 1e-4);
      if (!active.length) return null;
      let reach = 2;
      for (const [w, i] of active) reach += Math.abs(w) * group.reach[i];
      const [bx0, by0, bx1, by1] = group.box;
      const corners = [[bx0, by0], [bx1, by0], [bx0, by1], [bx1, by1]].map((c) => rigid.forward(c));
      const k = h.solver.coarse;
      const mnx = Math.min(...corners.map((c) => c[0])), mny = Math.min(...corners.map((c) => c[1]));
      const mxx = Math.max(...corners.map((c) => c[0])), mxy = Math.max(...corners.map((c) => c[1]));
      let x0 = floorDiv(Math.floor(mnx - reach), k) * k, y0 = floorDiv(Math.floor(mny - reach), k) * k;
      let x1 = floorDiv(Math.ceil(mxx + reach), k) * k, y1 = floorDiv(Math.ceil(mxy + reach), k) * k;
      const [lx0, ly0, lx1, ly1] = group.limit;
      const mod = (a, b) => ((a % b) + b) % b;
      x0 = Math.max(x0, lx0 + mod(-lx0, k), 0);
      y0 = Math.max(y0, ly0 + mod(-ly0, k), 0);
      x1 = Math.min(x1, floorDiv(lx1, k) * k, floorDiv(this.w, k) * k);
      y1 = Math.min(y1, floorDiv(ly1, k) * k, floorDiv(this.bh, k) * k);
      if (x1 - x0 < 2 * k || y1 - y0 < 2 * k) return null;
      const full = new Array(7).fill(0);
      for (const [w, i] of active) full[i] = w;
      return { region: [x0, y0, x1, y1], weights: full, small: [(x1 - x0) / k, (y1 - y0) / k] };
    };
    const mouthSolve = solve(h.mouth);
    const browSolve = solve(h.brows);
    let sharpBox = null;
    if (mouthSolve) {
      const [x0, y0, x1, y1] = mouthSolve.region;
      const s = [Math.max(sharp[0], x0), Math.max(sharp[1], y0), Math.min(sharp[2], x1), Math.min(sharp[3], y1)];
      if (s[2] > s[0] && s[3] > s[1]) sharpBox = s;
    }
    // the mouth interior
    const n = L.upper;
    const upper = lips.slice(0, n), lower = lips.slice(n).reverse();
    let opening = 0;
    for (let i = 0; i < n; i++) opening = Math.max(opening, Math.hypot(lower[i][0] - upper[i][0], lower[i][1] - upper[i][1]));
    let interior = null;
    const lipBox = box(lips, 2, this.w, this.bh);
    if (opening >= 0.3 && lipBox[2] - lipBox[0] >= 2 && lipBox[3] - lipBox[1] >= 2) {
      const mf = h.mouth_frame;
      const mw = mf.mw;
      const [x0, y0] = lipBox;
      const midLow = [lower[n >> 1][0] - x0, lower[n >> 1][1] - y0];
      const axes = [Math.max(1, Math.trunc(0.24 * mw * 16)) / 16, Math.max(1, Math.trunc(0.4 * opening * 16)) / 16];
      const centre = [Math.round(midLow[0] * 16) / 16 + x0, Math.round((midLow[1] + 0.15 * opening) * 16) / 16 + y0];
      const strength = Math.min(Math.max((opening - 0.08 * mw) / (0.12 * mw), 0), 1);
      const d = 0.9 * mf.teeth_depth;
      interior = {
        box: lipBox,
        sigma: Math.max(0.8, 0.3 * opening),
        tongue: [...centre, ...axes],
        tongueK: [Math.max(0.7, 0.12 * opening), strength],
        teethK: [mw, rad(yaw) * d, rad(pitch) * d, 0.05 * (weights.lips_round || 0)],
      };
    }
    return { weights, yaw, pitch, roll, dx, dy, rigid, parallax, mouthSolve, browSolve, sharpBox, lips, interior, blink: clamp01(state.blink) };
  }

  #common(prog, plan, target = null) {
    const gl = this.gl;
    const h = this.pack.header;
    const u = prog.loc;
    const r = plan.rigid;
    gl.uniform4f(u("uM"), ...r.m);
    gl.uniform2f(u("uT"), ...r.t);
    gl.uniform1f(u("uDy"), plan.dy);
    gl.uniform1f(u("uBandH"), this.bh);
    gl.uniform1f(u("uRampDen"), Math.max(h.band[1] - h.shoulder_row, 1));
    gl.uniform1i(u("uParallax"), plan.parallax ? 1 : 0);
    gl.uniform2f(u("uYawPitch"), rad(plan.yaw), rad(plan.pitch));
    if (plan.parallax) {
      gl.uniform4i(u("uDepthRegion"), ...plan.parallax.region);
      gl.uniform2i(u("uDepthOrigin"), ...plan.parallax.origin);
    }
    gl.uniform1i(u("uIterations"), h.solver.iterations);
    const m = plan.mouthSolve, b = plan.browSolve;
    gl.uniform1fv(u("uMouthW"), m ? m.weights : new Array(7).fill(0));
    gl.uniform1i(u("uMouthN"), h.mouth.names.length);
    gl.uniform2f(u("uMouthOrigin"), h.mouth.box[0], h.mouth.box[1]);
    gl.uniform2i(u("uMouthSize"), h.mouth.box[2] - h.mouth.box[0], h.mouth.box[3] - h.mouth.box[1]);
    gl.uniform1i(u("uMouthOn"), m ? 1 : 0);
    if (m) gl.uniform4i(u("uMouthRegion"), ...m.region);
    gl.uniform1i(u("uSharpOn"), plan.sharpBox ? 1 : 0);
    if (plan.sharpBox) gl.uniform4i(u("uSharp"), ...plan.sharpBox);
    gl.uniform1fv(u("uBrowW"), b ? b.weights.slice(0, 2) : [0, 0]);
    gl.uniform1i(u("uBrowN"), h.brows.names.length);
    gl.uniform2f(u("uBrowOrigin"), h.brows.box[0], h.brows.box[1]);
    gl.uniform2i(u("uBrowSize"), h.brows.box[2] - h.brows.box[0], h.brows.box[3] - h.brows.box[1]);
    gl.uniform1i(u("uBrowOn"), b ? 1 : 0);
    if (b) gl.uniform4i(u("uBrowRegion"), ...b.region);
    const units = [
      ["uHW", gl.TEXTURE_2D, this.tex.hw],
      ["uDepth", gl.TEXTURE_2D, this.tex.depth],
      ["uMouthF", gl.TEXTURE_2D_ARRAY, this.tex.mouthF],
      ["uBrowF", gl.TEXTURE_2D_ARRAY, this.tex.browF],
      ["uMouthD", gl.TEXTURE_2D, this.mouthD.tex],
      ["uBrowD", gl.TEXTURE_2D, this.browD.tex],
    ].map(([name, kind, tex]) => [name, kind, tex === target ? this.tex.hw : tex]); // never sample the target
    units.forEach(([name, target, tex], i) => {
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(target, tex);
      gl.uniform1i(u(name), i);
    });
    return units.length;
  }

  #draw(fb, width, height) {
    const gl = this.gl;
    gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
    gl.viewport(0, 0, width, height);
    gl.bindVertexArray(this.vao);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }

  /** Draw one FaceState ({mouth[5], blink, yaw, pitch, roll, dx, dy, brows, smile}) into the canvas. */
  render(state) {
    const gl = this.gl;
    const h = this.pack.header;
    const plan = this.plan(state);
    this.lastPlan = plan;
    gl.disable(gl.BLEND);
    // 1. the source with the closed lids (open eyes: the last one stays valid)
    if (plan.blink >= 0.02 || !this.workOpen) {
      this.workOpen = plan.blink < 0.02;
      const { p, loc } = this.programs.work;
      gl.useProgram(p);
      const bind = (unit, tex) => { gl.activeTexture(gl.TEXTURE0 + unit); gl.bindTexture(gl.TEXTURE_2D, tex); };
      bind(0, this.tex.static);
      gl.uniform1i(loc("uSrc"), 0);
      gl.uniform1i(loc("uTop"), this.top);
      gl.uniform1f(loc("uBlink"), plan.blink);
      const eyes = [0, 1].map((i) => h.eyes[i]);
      gl.uniform4iv(loc("uEye"), eyes.flatMap((e) => (e ? [e.x, e.y, e.w, e.h] : [0, 0, 0, 0])));
      gl.uniform3fv(loc("uLash"), eyes.flatMap((e) => (e ? e.lash_color : [0, 0, 0])));
      gl.uniform1fv(loc("uLashBand"), eyes.map((e) => (e ? e.band : 0)));
      eyes.forEach((e, i) => {
        bind(1 + i, this.tex.lids[i] || this.tex.lids[0] || this.tex.static);
        bind(3 + i, this.tex.lines[i] || this.tex.lines[0] || this.tex.static);
      });
      gl.uniform1iv(loc("uLid"), [1, 2]);
      gl.uniform1iv(loc("uLines"), [3, 4]);
      this.#draw(this.work.fb, this.w, this.bh);
    }
    // 2. the coarse solves: the mouth's, then the brows' (on the maps the mouth left)
    const coarse = this.programs.coarse;
    gl.useProgram(coarse.p);
    if (plan.mouthSolve) {
      this.#common(coarse, plan, this.mouthD.tex);
      gl.uniform1i(coarse.loc("uStage"), 0);
      this.#draw(this.mouthD.fb, ...plan.mouthSolve.small);
    }
    if (plan.browSolve) {
      this.#common(coarse, plan, this.browD.tex);
      gl.uniform1i(coarse.loc("uStage"), 1);
      this.#draw(this.browD.fb, ...plan.browSolve.small);
    }
    // 3. the frame: warp, then the mouth interior
    const fin = this.programs.final;
    gl.useProgram(fin.p);
    let unit = this.#common(fin, plan);
    const u = fin.loc;
    for (const [name, tex] of [["uStatic", this.tex.static], ["uWork", this.work.tex], ["uTeeth", this.tex.teeth]]) {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, tex);
      gl.uniform1i(u(name), unit++);
    }
    gl.uniform1i(u("uTop"), this.top);
    gl.uniform1i(u("uH"), this.h);
    const it = plan.interior;
    gl.uniform1i(u("uLipsOn"), it ? 1 : 0);
    if (it) {
      const mf = h.mouth_frame;
      gl.uniform2fv(u("uLips"), plan.lips.flat());
      gl.uniform4i(u("uLipBox"), ...it.box);
      gl.uniform1f(u("uInnerSigma"), it.sigma);
      gl.uniform4f(u("uTongue"), ...it.tongue);
      gl.uniform2f(u("uTongueK"), ...it.tongueK);
      gl.uniform3fv(u("uColInterior"), h.mouth_colors[0]);
      gl.uniform3fv(u("uColTongue"), h.mouth_colors[1]);
      gl.uniform4f(u("uMouthFrame"), ...mf.centre, ...mf.eu);
      gl.uniform4f(u("uTeethK"), ...it.teethK);
      gl.uniform2f(u("uTeethSpan"), ...h.teeth.span);
      gl.uniform1fv(u("uSeamU"), mf.seam_u);
      gl.uniform1fv(u("uSeamV"), mf.seam_v);
    }
    this.#draw(null, this.w, this.h);
  }

  /** The canvas's pixels, RGBA rows from the top (for tests and snapshots). */
  readPixels() {
    const gl = this.gl;
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    const raw = new Uint8Array(this.w * this.h * 4);
    gl.readPixels(0, 0, this.w, this.h, gl.RGBA, gl.UNSIGNED_BYTE, raw);
    const out = new Uint8Array(raw.length);
    const row = this.w * 4;
    for (let y = 0; y < this.h; y++) out.set(raw.subarray((this.h - 1 - y) * row, (this.h - y) * row), y * row);
    return out;
  }

  /** Free the GPU resources. */
  destroy() {
    const gl = this.gl;
    for (const t of [...Object.values(this.tex).flat()]) if (t) gl.deleteTexture(t);
    for (const t of [this.work, this.mouthD, this.browD]) { gl.deleteTexture(t.tex); gl.deleteFramebuffer(t.fb); }
    for (const { p } of Object.values(this.programs)) gl.deleteProgram(p);
  }
}

export { MOUTH_BASES };
