"""Per-frame renderer: FaceState -> BGR frame, with numpy and OpenCV only."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt

from liveavatar.render.arrays import F32, F64, U8
from liveavatar.render.background import Background
from liveavatar.render.face import FaceState
from liveavatar.render.inverse_warp import COARSE, FieldGroup, Maps, Rigid
from liveavatar.render.landmarks import LOWER_INNER, UPPER_INNER
from liveavatar.render.pack import FACE_FIELDS, MOUTH_FIELDS, TEETH_SPAN, AvatarPack, per_pack

MAX_ROLL = 4.5
"""Degrees of head tilt drawn at most (larger values are clamped)."""
MAX_SHIFT = 6.0
"""Pixels of head offset (dx, dy) drawn at most."""
MAX_TURN = 10.0
"""Degrees of yaw and pitch drawn at most."""
BODY_STEPS = 8
"""The body's breathing offset is redrawn in steps of 1/BODY_STEPS pixel."""

Box = tuple[int, int, int, int]
"""x0, y0, x1, y1 in band coordinates."""


class _Prepared:
    """What every renderer of one pack shares (read-only): grids, weights, fields, tiles, geometry."""

    def __init__(self, pack: AvatarPack) -> None:
        w, _ = pack.size
        top, bottom = pack.band
        bh = bottom - top
        a = pack.alpha[top:bottom]
        prem = (pack.image[top:bottom].astype(np.float32) * (a[..., None] / np.float32(255)) + 0.5).astype(np.uint8)
        self.person = np.ascontiguousarray(np.dstack([prem, a]))
        self.gy, self.gx = np.mgrid[0:bh, 0:w].astype(np.float32)
        hw = pack.head_weight.astype(np.float32)
        rows = np.arange(top, bottom, dtype=np.float32)[:, None]
        ramp = np.clip((bottom - rows) / max(bottom - pack.shoulder_row, 1.0), 0.0, 1.0)
        self.body = ((1 - hw) * ramp).astype(np.float32)
        # how far the head can move: the tilt swings the top of the head the most
        filled = np.nonzero((a > 0).any(1))[0]
        reach_up = pack.pivot[1] - top - (float(filled[0]) if len(filled) else 0.0)
        margin = self.margin = int(reach_up * math.sin(math.radians(MAX_ROLL)) + MAX_SHIFT) + 3
        self.mouth = FieldGroup(pack, MOUTH_FIELDS, top, margin)
        self.brows = FieldGroup(pack, FACE_FIELDS, top, margin)
        d = pack.depth
        self.depth = (d.x, d.y - top, d.data[..., 0].astype(np.float32))
        dh, dw = d.data.shape[:2]
        self.depth_limit = (d.x - margin, d.y - top - margin, d.x + dw + margin, d.y - top + dh + margin)
        # every pixel the head motion or a field may move is redrawn (and its map rebuilt) each frame
        moving = hw > 1e-3
        limits = [
            (max(x0, 0), max(y0, 0), min(max(x1, 0), w), min(max(y1, 0), bh))
            for x0, y0, x1, y1 in (self.mouth.limit, self.brows.limit, self.depth_limit)
        ]
        for x0, y0, x1, y1 in limits:
            moving[y0:y1, x0:x1] = True
        self.head_tiles, self.body_tiles = _tiles(a, moving, margin)
        # the head's maps are kept over one box that holds every head tile and every field's reach, and
        # contiguous: each pass over them is then one call; the body tiles' maps are kept apart
        boxes = [b for b in self.head_tiles + limits if b[2] > b[0] and b[3] > b[1]] or [(0, 0, 1, 1)]
        self.map_box = x0, y0, x1, y1 = _union(boxes)
        self.mouth_box = _intersection(self.mouth.limit, self.map_box)
        """Where a mouth solve may change the head's maps (its limit inside the maps' box)."""

        def crop(v: F32) -> F32:
            return np.ascontiguousarray(v[y0:y1, x0:x1])

        self.head_gx, self.head_gy, self.head_hw = crop(self.gx), crop(self.gy), crop(hw)
        self.head_hwx, self.head_hwy, self.head_body = crop(hw * self.gx), crop(hw * self.gy), crop(self.body)
        self.lm = pack.landmarks[:, :2].astype(np.float64) - [0.0, top]
        self.deltas = {k: v.astype(np.float64) for k, v in pack.deltas.items()}
        centre = (self.lm[61] + self.lm[291]) / 2
        eu = self.lm[291] - self.lm[61]
        self.mw = float(np.linalg.norm(eu))
        self.mouth_frame = (centre, eu / self.mw)
        e = self.mouth_frame[1]
        seam = self.lm[list(UPPER_INNER)] - centre
        su, sv = seam @ e / self.mw, seam @ np.array([-e[1], e[0]]) / self.mw
        order = np.argsort(su)
        self.seam = (su[order], sv[order])
        self.teeth_depth = 0.9 * float(self.deltas["depth"][13, 0])
        """How far the upper teeth sit behind the lip (scales their parallax)."""
        self.face_centre = self.lm[[1, 10, 152]].mean(0)
        # the inner lip outline's points (upper contour, then lower reversed) and how each field moves them
        idx = list(UPPER_INNER + LOWER_INNER[::-1])
        self.lips = self.lm[idx]
        self.lip_deltas = {n: self.deltas[n][idx] for n in MOUTH_FIELDS if n in self.deltas}
        self.lip_depth = self.deltas["depth"][idx, 0]
        self.pivot = (pack.pivot[0], pack.pivot[1] - top)
        # the still frame over a backdrop: opaque pixels are the photo, clear ones the backdrop, and only
        # the matte's soft edge is blended (same float32 arithmetic as blending the whole frame)
        self.opaque = np.where(pack.alpha == 255, np.uint8(255), np.uint8(0))
        edge = np.flatnonzero((pack.alpha > 0) & (pack.alpha < 255))
        ea = pack.alpha.reshape(-1)[edge][:, None].astype(np.float32) / 255.0
        self.edge = edge
        self.edge_photo = pack.image.reshape(-1, 3)[edge].astype(np.float32) * ea
        self.edge_under = 1 - ea


_prepared = per_pack(_Prepared)


class Renderer:
    """Draws an avatar pack's FaceStates; only the head band is redrawn each frame, the rest is cached."""

    still_when_unchanged = True

    # Over a solid colour the band is warped from a cached composite; over an image the person is
    # warped alone and composited, so the backdrop never moves with the head.
    # A frame whose head pose and eyelids are those of the frame before (speech between two steps of idle
    # motion: see session/avatar.py) redraws the mouth alone: the head's maps are the same but for what
    # the mouth fields solved, so those are put back from a copy taken after the head motion, solved
    # again, and only the pixels either frame's mouth reached are warped again; bit for bit a full redraw.

    def __init__(self, pack: AvatarPack, background: Background | None = None) -> None:
        self.pack = pack
        p = self._p = _prepared(pack)  # shared by every session showing this avatar
        w, h = pack.size
        self._w, self._h = w, h
        top, bottom = pack.band
        self._top = top
        self._src = p.person
        self._work = p.person.copy()
        self._blinked = False
        x0, y0, _, _ = p.map_box
        self._maps_head = Maps(p.head_gx.copy(), p.head_gy.copy(), (x0, y0), (w, bottom - top))
        self._body_mapy = p.gy.copy()
        self._rest_maps = True
        """The head's maps hold the grid (no head motion) except over the `_solved` boxes."""
        self._solved: tuple[Box | None, Box | None] = (None, None)
        """The boxes where the mouth and the brows fields were solved into the head's maps."""
        self._acc = {id(g): np.zeros(g.shape, np.float32) for g in (p.mouth, p.brows)}
        self._body_dy: float | None = None
        self._frame = np.empty((h, w, 3), np.uint8)
        self._band = self._frame[top:bottom]
        self._bg_band = np.empty((bottom - top, w, 3), np.uint8)
        self._layer = np.empty((bottom - top, w, 4), np.uint8)
        """Scratch for the warped tiles (BGRA)."""
        self._solid = True
        self._last: tuple[float, ...] | None = None
        self._pose: tuple[float, ...] | None = None
        """Eyelids and head pose of the frame in the buffer (None: redraw it all)."""
        mx0, my0, mx1, my1 = p.mouth_box
        shape = (max(0, my1 - my0), max(0, mx1 - mx0))
        self._rigid_mouth = (np.empty(shape, np.float32), np.empty(shape, np.float32))
        """The head's maps over the mouth's box before the mouth fields were solved into them."""
        self._mouth_reach: list[Box] = []
        """Where the mouth of the frame in the buffer changed the maps and drew its interior."""
        self.set_background(background)

    @property
    def size(self) -> tuple[int, int]:
        """Frame size (width, height)."""
        return self._w, self._h

    def set_background(self, background: Background | None) -> None:
        """Draw over another background from the next frame on (None: the default colour)."""
        bg_obj = background or Background()
        bg = bg_obj.frame(self._w, self._h)
        p = self._p
        self._frame[:] = bg
        cv2.copyTo(self.pack.image, p.opaque, self._frame)
        flat = self._frame.reshape(-1, 3)
        flat[p.edge] = np.clip(p.edge_photo + bg.reshape(-1, 3)[p.edge].astype(np.float32) * p.edge_under + 0.5, 0, 255)
        top, bottom = self.pack.band
        self._bg_band[:] = bg[top:bottom]
        was_solid, self._solid = self._solid, not bg_obj.is_image
        self._body_dy = None
        self._last = self._pose = None
        if self._solid or was_solid or self._src is not p.person:
            # over an image the source is the person alone whatever the image: a new one (a video
            # backdrop's next frame) keeps the source and any eyelids drawn into it
            # four channels either way: OpenCV's remap has a vector path for 4 channels and none for 3
            self._src = cv2.cvtColor(self._frame[top:bottom], cv2.COLOR_BGR2BGRA) if self._solid else p.person
            self._work = self._src.copy()
            self._blinked = False

    def render(self, state: FaceState) -> U8:
        """The frame for one FaceState (H x W x 3 BGR); the same buffer is reused and overwritten each call."""
        mouth = np.clip(np.asarray(state.mouth, dtype=np.float64), 0.0, 1.0)
        key = (*mouth.tolist(), state.blink, state.yaw, state.pitch, state.roll, state.dx, state.dy)
        key += (state.brows, state.smile)
        if key == self._last:
            return self._frame  # the same state draws the same picture: it is still in the buffer
        self._last = key
        jaw, wide, rnd, closed, tuck = (float(v) for v in mouth[:5])
        keep = 1.0 - closed  # closed lips override whatever else would part them
        weights = {
            "jaw_open": jaw * keep,
            "lips_wide": wide * keep,
            "lips_round": rnd * keep,
            "lips_closed": closed,
            "lower_lip_tuck": tuck * keep,
            "smile_up": max(state.smile, 0.0),
            "smile_down": max(-state.smile, 0.0),
            "brows_up": max(state.brows, 0.0),
            "brows_down": max(-state.brows, 0.0),
        }
        blink = float(np.clip(state.blink, 0.0, 1.0))
        state = replace(
            state,
            yaw=_clamp(state.yaw, MAX_TURN),
            pitch=_clamp(state.pitch, MAX_TURN),
            roll=_clamp(state.roll, MAX_ROLL),
            dx=_clamp(state.dx, MAX_SHIFT),
            dy=_clamp(state.dy, MAX_SHIFT),
        )
        rigid = Rigid(state.roll, state.dx, state.dy, self._p.pivot)
        pose = (blink, state.yaw, state.pitch, state.roll, state.dx, state.dy)
        brows = any(abs(weights[n]) > 1e-4 for n in FACE_FIELDS)
        if pose == self._pose and not brows and self._solved[1] is None:
            self._redraw_mouth(state, weights, rigid)
        else:
            self._pose = pose
            self._redraw(state, weights, rigid, blink)
        return self._frame

    def _redraw(self, state: FaceState, weights: dict[str, float], rigid: Rigid, blink: float) -> None:
        """Warp every head tile (and the body's, when it breathed) and draw the mouth."""
        p = self._p
        self._blink(blink)
        self._maps(state, rigid)
        maps = self._maps_head
        x0, y0, x1, y1 = p.mouth_box
        mx, my = maps.at(x0, y0, x1, y1)
        np.copyto(self._rigid_mouth[0], mx)
        np.copyto(self._rigid_mouth[1], my)
        lips, mouth = self._solve_mouth(state, weights, rigid)
        self._solved = (mouth, p.brows.solve(weights, maps, rigid, self._acc[id(p.brows)]))
        for box in p.head_tiles:
            self._warp(box, *maps.at(*box))
        body_dy = round(state.dy * BODY_STEPS) / BODY_STEPS
        if body_dy != self._body_dy:
            # the body only breathes: redraw it when its (quantised) offset changes
            self._body_dy = body_dy
            self._maps_body(body_dy)
            for x0, y0, x1, y1 in p.body_tiles:
                self._warp((x0, y0, x1, y1), p.gx[y0:y1, x0:x1], self._body_mapy[y0:y1, x0:x1])
        self._draw_mouth(lips, mouth, rigid, state, weights)

    def _redraw_mouth(self, state: FaceState, weights: dict[str, float], rigid: Rigid) -> None:
        """The frame in the buffer with another mouth: solve the mouth fields again, warp where either reached."""
        p = self._p
        maps = self._maps_head
        rx, ry = self._rigid_mouth
        x0, y0, x1, y1 = p.mouth_box
        if self._solved[0] is not None:  # where the mouth moved the maps: back to the head's motion alone
            bx0, by0, bx1, by1 = self._solved[0]
            mx, my = maps.at(bx0, by0, bx1, by1)
            ys, xs = slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0)
            mx[:], my[:] = rx[ys, xs], ry[ys, xs]
        lips, mouth = self._solve_mouth(state, weights, rigid)
        self._solved = (mouth, None)
        reach = _union(self._mouth_reach + [b for b in (mouth, self._interior(lips)) if b is not None])
        for tile in p.head_tiles:
            box = _intersection(tile, reach)
            if box[2] > box[0] and box[3] > box[1]:
                self._warp(box, *maps.at(*box))
        self._draw_mouth(lips, mouth, rigid, state, weights)

    def _solve_mouth(self, state: FaceState, weights: dict[str, float], rigid: Rigid) -> tuple[F64, Box | None]:
        """The parted lips' outline now, and the mouth fields solved into the head's maps (None: none active)."""
        p = self._p
        lips = self._lips(state, weights, rigid)
        sharp = _box(lips, 2 * COARSE, self._w, self._band.shape[0])
        return lips, p.mouth.solve(weights, self._maps_head, rigid, self._acc[id(p.mouth)], sharp)

    def _interior(self, lips: F64) -> Box:
        """The box the mouth's interior is drawn in."""
        return _box(lips, 2, self._w, self._band.shape[0])

    def _warp(self, box: Box, mx: F32, my: F32) -> None:
        """Draw one box of the band from the source through the maps (over the backdrop when it is an image)."""
        x0, y0, x1, y1 = box
        layer = self._layer[y0:y1, x0:x1]
        if self._solid:
            cv2.remap(self._work, mx, my, cv2.INTER_LINEAR, dst=layer, borderMode=cv2.BORDER_REPLICATE)
            cv2.cvtColor(layer, cv2.COLOR_BGRA2BGR, dst=self._band[y0:y1, x0:x1])
            return
        cv2.remap(self._work, mx, my, cv2.INTER_LINEAR, dst=layer, borderMode=cv2.BORDER_CONSTANT)
        inv = cv2.cvtColor(cv2.bitwise_not(cv2.extractChannel(layer, 3)), cv2.COLOR_GRAY2BGR)
        under = cv2.multiply(self._bg_band[y0:y1, x0:x1], inv, scale=1 / 255)
        cv2.add(cv2.cvtColor(layer, cv2.COLOR_BGRA2BGR), under, dst=self._band[y0:y1, x0:x1])

    def _maps_body(self, dy: float) -> None:
        p = self._p
        for x0, y0, x1, y1 in p.body_tiles:
            cv2.scaleAdd(p.body[y0:y1, x0:x1], -dy, p.gy[y0:y1, x0:x1], dst=self._body_mapy[y0:y1, x0:x1])

    def _maps(self, state: FaceState, rigid: Rigid) -> None:
        p = self._p
        maps = self._maps_head
        mx, my = maps.x, maps.y
        yaw, pitch = math.radians(state.yaw), math.radians(state.pitch)
        still = abs(yaw) + abs(pitch) < 1e-6
        if still and state.roll == 0 and state.dx == 0 and state.dy == 0:
            # no head motion: the maps are the grid (bit for bit), so only what the fields moved is reset
            if not self._rest_maps:
                np.copyto(mx, p.head_gx)
                np.copyto(my, p.head_gy)
            else:
                for x0, y0, x1, y1 in (b for b in self._solved if b is not None):
                    ys, xs = slice(y0 - maps.y0, y1 - maps.y0), slice(x0 - maps.x0, x1 - maps.x0)
                    mx[ys, xs], my[ys, xs] = p.head_gx[ys, xs], p.head_gy[ys, xs]
            self._rest_maps = True
            return
        self._rest_maps = False
        (m00, m01), (m10, m11) = rigid.m
        tx, ty = rigid.t
        cv2.scaleAdd(p.head_hwx, m00, p.head_gx, dst=mx)
        cv2.scaleAdd(p.head_hwy, m01, mx, dst=mx)
        cv2.scaleAdd(p.head_hw, tx, mx, dst=mx)
        cv2.scaleAdd(p.head_hwx, m10, p.head_gy, dst=my)
        cv2.scaleAdd(p.head_hwy, m11, my, dst=my)
        cv2.scaleAdd(p.head_hw, ty, my, dst=my)
        cv2.scaleAdd(p.head_body, -state.dy, my, dst=my)
        if still:
            return
        # depth parallax, sampled where the face now is (an integer shift; the residual is sub-pixel)
        shift = rigid.forward(self._p.face_centre[None])[0] - self._p.face_centre
        sx, sy = int(round(shift[0])), int(round(shift[1]))
        x0, y0, d = self._p.depth
        h, w = d.shape
        lx0, ly0, lx1, ly1 = self._p.depth_limit
        ox0, oy0 = max(0, x0 + sx, lx0), max(0, y0 + sy, ly0)
        ox1, oy1 = min(self._w, x0 + sx + w, lx1), min(maps.band[1], y0 + sy + h, ly1)
        if ox1 <= ox0 or oy1 <= oy0:
            return
        sub = d[oy0 - y0 - sy : oy1 - y0 - sy, ox0 - x0 - sx : ox1 - x0 - sx]
        dmx, dmy = maps.at(ox0, oy0, ox1, oy1)
        if yaw:
            cv2.scaleAdd(sub, -yaw, dmx, dst=dmx)
        if pitch:
            cv2.scaleAdd(sub, -pitch, dmy, dst=dmy)

    # ------------------------------------------------------------ eyes and mouth

    def _blink(self, b: float) -> None:
        """Draw closed-lid patches into the source (the warp then carries them with the face)."""
        if b < 0.02:
            if self._blinked:
                for eye in self.pack.eyes:
                    h, w = eye.lid.shape[:2]
                    y = eye.y - self._top
                    self._work[y : y + h, eye.x : eye.x + w] = self._src[y : y + h, eye.x : eye.x + w]
                self._blinked = False
            return
        self._blinked = True
        fade = min(b / 0.12, 1.0)
        for eye in self.pack.eyes:
            h, w = eye.lid.shape[:2]
            y = eye.y - self._top
            yy = np.arange(h, dtype=np.float32)[:, None]
            edge = eye.upper + b * (eye.closed - eye.upper)
            cover = np.clip(edge - yy + 0.5, 0.0, 1.0)
            lash_band = (yy < eye.upper) & (yy >= eye.upper - eye.band)
            cover = np.where(yy < eye.upper, lash_band * fade, cover)
            shadow = 1 - 0.14 * np.exp(-np.maximum(edge - yy, 0) / 2.5)
            lash = (eye.lash * np.exp(-(((yy - edge + 0.6) / 0.9) ** 2)) * fade)[..., None]
            src = self._src[y : y + h, eye.x : eye.x + w, :3].astype(np.float32)
            lid = eye.lid.astype(np.float32) * shadow[..., None]
            out = src + (lid - src) * cover[..., None]
            out += (eye.lash_color - out) * np.minimum(lash * 0.95, 1.0)
            self._work[y : y + h, eye.x : eye.x + w, :3] = np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _lips(self, state: FaceState, weights: dict[str, float], rigid: Rigid) -> F64:
        """The parted lips' inner outline now (upper contour, then lower reversed), band coordinates."""
        p = self._p
        moved = p.lips.copy()
        for n in MOUTH_FIELDS:
            w = weights.get(n, 0.0)
            if w:
                moved += w * p.lip_deltas[n]
        depth = p.lip_depth
        moved[:, 0] += math.radians(state.yaw) * depth
        moved[:, 1] += math.radians(state.pitch) * depth
        return rigid.forward(moved)

    def _draw_mouth(
        self, pts: F64, solved: Box | None, rigid: Rigid, state: FaceState, weights: dict[str, float]
    ) -> None:
        """Mouth interior inside the parted lips: dark fill, tongue, upper teeth fixed to the skull; notes where
        this frame's mouth reached (the box its fields were `solved` in, and the interior's)."""
        box = self._interior(pts)
        self._mouth_reach = [b for b in (solved, box) if b is not None]
        n = len(UPPER_INNER)
        gap = pts[n:][::-1] - pts[:n]  # lower lip minus upper lip, point by point
        opening = math.sqrt(float((gap * gap).sum(1).max()))
        if opening < 0.3:
            return
        x0, y0, x1, y1 = box
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        h, w = y1 - y0, x1 - x0
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round((pts - [x0, y0]) * 16).astype(np.int32)], (255,), cv2.LINE_AA, 4)
        m = cv2.GaussianBlur(mask, (3, 3), 0.5).astype(np.float32) / np.float32(255)
        colors = self.pack.mouth_colors
        # darker toward the lips: the cavity is lit through the opening
        inner = cv2.GaussianBlur(m, (0, 0), max(0.8, 0.3 * opening))[..., None]
        lit = cv2.GaussianBlur(m, (0, 0), 0.9)[..., None]
        col = colors[0][None, None, :] * (0.5 + 0.7 * inner)
        # tongue: a soft lighter mound low in the mouth, seen once the jaw is well open
        mw = self._p.mw
        level = float(np.clip((opening - 0.08 * mw) / (0.12 * mw), 0.0, 1.0))
        if level > 0.0:  # at 0 it would add exact zeros
            mid_x, mid_y = float(pts[-1 - n // 2, 0]) - x0, float(pts[-1 - n // 2, 1]) - y0
            tongue = np.zeros((h, w), np.uint8)
            axes = (max(1, int(0.24 * mw * 16)), max(1, int(0.4 * opening * 16)))
            centre = (int(round(mid_x * 16)), int(round((mid_y + 0.15 * opening) * 16)))
            cv2.ellipse(tongue, centre, axes, 0.0, 180.0, 360.0, (255,), -1, cv2.LINE_AA, 4)
            t = cv2.GaussianBlur(tongue, (0, 0), max(0.7, 0.12 * opening)).astype(np.float32)[..., None] / 255.0
            t *= level
            col = col + (colors[1][None, None, :] * (0.45 + 0.55 * inner) - col) * t
        col = self._teeth(col, x0, y0, rigid, state, np.asarray(lit, np.float32), weights)
        region = self._band[y0:y1, x0:x1]
        base = region.astype(np.float32)
        region[:] = np.clip(base + (col - base) * m[..., None] + 0.5, 0, 255).astype(np.uint8)

    def _teeth(
        self, col: F32, x0: int, y0: int, rigid: Rigid, state: FaceState, lit: F32, weights: dict[str, float]
    ) -> F32:
        """Blend the upper teeth (the photo's own or synthetic), placed on the skull, not the jaw."""
        h, w = col.shape[:2]
        p = self._p
        # a row of x and a column of y: broadcasting does the same arithmetic per pixel as full grids
        xs = np.arange(x0, x0 + w, dtype=np.float64)[None, :]
        ys = np.arange(y0, y0 + h, dtype=np.float64)[:, None]
        rx, ry = rigid.backward(xs, ys)
        centre, eu = p.mouth_frame
        rx -= math.radians(state.yaw) * p.teeth_depth + centre[0]
        ry -= math.radians(state.pitch) * p.teeth_depth + centre[1]
        u = (rx * eu[0] + ry * eu[1]) / p.mw
        v = (ry * eu[0] - rx * eu[1]) / p.mw - np.interp(u, *p.seam)
        v += 0.05 * weights.get("lips_round", 0.0)  # pursed lips reach forward over the teeth
        rows, cols = self.pack.teeth.shape[:2]
        cu = ((u + 0.5) * (cols - 1)).astype(np.float32)
        rv = ((v - TEETH_SPAN[0]) / (TEETH_SPAN[1] - TEETH_SPAN[0]) * (rows - 1)).astype(np.float32)
        tex = cv2.remap(self.pack.teeth, cu, rv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        a = tex[..., 3:].astype(np.float32) / 255.0
        teeth = tex[..., :3].astype(np.float32) * (0.7 + 0.3 * lit)  # in the upper lip's shadow
        return np.asarray(col + (teeth - col) * a, dtype=np.float32)


def _clamp(v: float, limit: float) -> float:
    return min(max(float(v), -limit), limit)


def _union(boxes: list[Box]) -> Box:
    """The smallest box that holds every one of `boxes`."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _intersection(a: Box, b: Box) -> Box:
    """Where two boxes overlap (empty, x1 <= x0 or y1 <= y0, when they don't)."""
    return max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])


def _box(pts: F64, margin: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer box around points, grown by a margin and clipped to the frame."""
    (lx, ly), (hx, hy) = pts.min(0).tolist(), pts.max(0).tolist()
    x0, y0 = math.floor(lx) - margin, math.floor(ly) - margin
    x1, y1 = math.ceil(hx) + margin + 1, math.ceil(hy) + margin + 1
    return max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)


def _tiles(
    alpha: U8, moving: npt.NDArray[np.bool_], margin: int, rows: int = 32
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """Boxes (x0, y0, x1, y1) the person can reach: head ones (redrawn each frame), body ones (breathing only)."""
    reach = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    heads, bodies = [], []
    for y0 in range(0, alpha.shape[0], rows):
        y1 = min(alpha.shape[0], y0 + rows)
        cols = np.nonzero(reach[y0:y1].any(0))[0]
        if not len(cols):
            continue
        x0, x1 = int(cols[0]), int(cols[-1]) + 1
        hcols = np.nonzero(moving[y0:y1].any(0))[0]
        if not len(hcols):
            bodies.append((x0, y0, x1, y1))
            continue
        h0, h1 = max(x0, int(hcols[0])), min(x1, int(hcols[-1]) + 1)
        heads.append((h0, y0, h1, y1))
        bodies += [(a, y0, b, y1) for a, b in ((x0, h0), (h1, x1)) if b > a]
    return heads, bodies
