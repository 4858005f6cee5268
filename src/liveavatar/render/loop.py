"""Video avatars: the clip itself is the idle motion, with the speaking mouth drawn on the moving face."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Protocol

import cv2
import numpy as np

from liveavatar.render.arrays import F32, F64, U8
from liveavatar.render.background import Background
from liveavatar.render.face import FaceState
from liveavatar.render.loop_geometry import mouth_patch
from liveavatar.render.pack import FACE_FIELDS, MOUTH_FIELDS, AvatarPack, Field, per_pack
from liveavatar.render.renderer import Renderer

log = logging.getLogger(__name__)


class FrameRenderer(Protocol):
    """What a session draws its avatar with: a photo pack's Renderer or a video pack's LoopRenderer."""

    still_when_unchanged: bool
    """True when the same FaceState draws the same picture (a photo); a clip moves on with every frame."""

    @property
    def size(self) -> tuple[int, int]:
        """Frame size (width, height)."""
        ...

    def render(self, state: FaceState) -> U8:
        """The frame for one FaceState (H x W x 3 BGR)."""
        ...

    def set_background(self, background: Background | None) -> None:
        """Draw over another background from the next frame on."""
        ...


def renderer_for(pack: AvatarPack, background: Background | None = None) -> FrameRenderer:
    """The renderer a pack's kind needs: the clip with a drawn mouth for a video pack, the warp for a photo."""
    if pack.loop is not None:
        return LoopRenderer(pack, background)
    return Renderer(pack, background)


class _LoopPrepared:
    """What every renderer of one video pack shares (read-only): the decoded loop and the mouth patch."""

    def __init__(self, pack: AvatarPack) -> None:
        loop = pack.loop
        assert loop is not None
        w, h = pack.size
        # decoded once per process, kept as I420 (half the memory of BGR; converting back is cheap)
        self.frames = np.empty((len(loop.frames), h * 3 // 2, w), np.uint8)
        for i, jpeg in enumerate(loop.frames):
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape[:2] != (h, w):
                raise ValueError(f"frame {i} of the avatar's loop cannot be decoded")
            cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420, dst=self.frames[i])
        self.poses = loop.poses.astype(np.float64)
        self.gain_matrices = [np.diag(g).astype(np.float32) for g in loop.gains]
        self.box, self.mask = mouth_patch(pack)
        rest = cv2.cvtColor(self.frames[loop.rest], cv2.COLOR_YUV2BGR_I420)
        self.mouth_pack = _mouth_only(pack, self.box, np.asarray(rest, np.uint8))
        self.placed: dict[int, tuple[tuple[int, int, int, int], F64, F32]] = {}
        """Per clip frame, once first shown: the patch's target box, its warp and its warped mask."""

    def place(self, i: int) -> tuple[tuple[int, int, int, int], F64, F32]:
        """Where the patch goes on clip frame i: target box, warp from the patch's box, feathered mask there."""
        found = self.placed.get(i)
        if found is not None:
            return found
        x0, y0, x1, y1 = self.box
        h, w = self.frames.shape[1] * 2 // 3, self.frames.shape[2]
        pose = self.poses[i]
        corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]]) @ pose.T
        bx0, by0 = np.floor(corners.min(0)).astype(int)
        bx1, by1 = np.ceil(corners.max(0)).astype(int) + 1
        target = (max(int(bx0), 0), max(int(by0), 0), min(int(bx1), w), min(int(by1), h))
        # patch pixel (u, v) is rest pixel (u + x0, v + y0); the target box starts at its own corner
        m = pose.copy()
        m[:, 2] += pose[:, :2] @ [x0, y0] - [target[0], target[1]]
        size = (max(target[2] - target[0], 0), max(target[3] - target[1], 0))
        mask = np.zeros((size[1], size[0]), np.float32)
        if min(size) > 1:
            mask = np.asarray(cv2.warpAffine(self.mask, m, size, flags=cv2.INTER_LINEAR), np.float32)
        found = self.placed[i] = (target, m, mask)
        return found


_prepared = per_pack(_LoopPrepared)


def _mouth_only(pack: AvatarPack, box: tuple[int, int, int, int], clip_frame: U8) -> AvatarPack:
    """The pack as the photo Renderer draws just its mouth: no head motion, lids or brows; the full rest frame.

    With zero head weight, no depth and every other field a point at the mouth, the Renderer redraws only
    the tiles around the mouth each frame. Around the person the rest frame is the clip's own frame (the
    builder cleaned the pack's edges of their background for compositing, which a clip does not need).
    """
    x0, y0, x1, y1 = box
    point = Field(x0, y0, np.zeros((1, 1, 2), np.float16))
    a = pack.alpha[..., None].astype(np.float32) / np.float32(255)
    image = pack.image.astype(np.float32) * a + clip_frame.astype(np.float32) * (1 - a)
    # opaque over the patch only: the Renderer's tiles (what it redraws per frame) then cover just the patch
    alpha = np.zeros_like(pack.alpha)
    alpha[y0:y1, x0:x1] = 255
    return replace(
        pack,
        image=np.clip(image + 0.5, 0, 255).astype(np.uint8),
        alpha=alpha,
        head_weight=np.zeros_like(pack.head_weight),
        depth=Field(x0, y0, np.zeros((1, 1, 1), np.float16)),
        fields={**{n: f for n, f in pack.fields.items() if n in MOUTH_FIELDS}, **dict.fromkeys(FACE_FIELDS, point)},
        eyes=[],
        loop=None,
    )


class LoopRenderer:
    """Plays a video pack's clip forth and back, one frame per call, with the speaking mouth on the face.

    The clip brings its own blinks, breathing and head motion, so the FaceState's blink, head pose and brows
    are not drawn; its mouth and smile are, by the photo Renderer on the rest frame, then carried onto each
    clip frame with that frame's head pose and feathered in.
    """

    still_when_unchanged = False

    def __init__(self, pack: AvatarPack, background: Background | None = None) -> None:
        assert pack.loop is not None, "a LoopRenderer needs a pack built from a video"
        self.pack = pack
        p = self._p = _prepared(pack)
        self._mouth = Renderer(p.mouth_pack)
        w, h = pack.size
        self._w, self._h = w, h
        self._frame = np.empty((h, w, 3), np.uint8)
        self._count = 0
        self._warned = False
        self.set_background(background)

    @property
    def size(self) -> tuple[int, int]:
        """Frame size (width, height)."""
        return self._w, self._h

    @property
    def length(self) -> int:
        """Frames in the clip (one pass; forth and back is 2 * length - 2)."""
        return len(self._p.frames)

    def set_background(self, background: Background | None) -> None:
        """Video avatars keep the clip's own backdrop: another background is not drawn (logged once)."""
        if background is not None and not self._warned:
            self._warned = True
            log.info("avatar %r comes from a video: it keeps the video's own background", self.pack.avatar_id)

    def index(self, count: int) -> int:
        """The clip frame shown at the `count`-th call: forth then back, so the ends meet without a jump."""
        n = len(self._p.frames)
        if n < 2:
            return 0
        k = count % (2 * n - 2)
        return k if k < n else 2 * n - 2 - k

    def render(self, state: FaceState) -> U8:
        """The next clip frame with this state's mouth (H x W x 3 BGR); the same buffer is reused each call."""
        p = self._p
        i = self.index(self._count)
        self._count += 1
        cv2.cvtColor(p.frames[i], cv2.COLOR_YUV2BGR_I420, dst=self._frame)
        rest = self._mouth.render(FaceState(mouth=state.mouth, smile=state.smile))
        self._paste(rest, i)
        return self._frame

    def _paste(self, rest: U8, i: int) -> None:
        """Carry the rest frame's mouth patch onto clip frame i with the head's pose, feathered."""
        (bx0, by0, bx1, by1), m, mask = self._p.place(i)
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            return
        x0, y0, x1, y1 = self._p.box
        size = (bx1 - bx0, by1 - by0)
        patch = cv2.warpAffine(rest[y0:y1, x0:x1], m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        patch = cv2.transform(patch, self._p.gain_matrices[i])
        region = self._frame[by0:by1, bx0:bx1]
        cv2.blendLinear(patch, region, mask, 1.0 - mask, dst=region)
