"""The avatar registry: which avatars are installed, with their previews."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2

from liveavatar.render.pack import AvatarPack

log = logging.getLogger(__name__)

Gender = Literal["male", "female"]
PREVIEW_SIZE = 512
THUMBNAIL_SIZE = 160
_RENDER = "liveavatar.render."


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root).joinpath(*parts)
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class Portrait:
    """A built-in avatar's source: a public-domain portrait that ships inside a package."""

    avatar_id: str
    name: str
    gender: Gender
    package: str
    parts: tuple[str, ...]

    def path(self) -> Path | None:
        """Where the image is installed, or None when its package is missing."""
        return _package_file(self.package, *self.parts)


BUILTIN_PORTRAITS = (
    # Eileen Collins, NASA portrait (public domain), shipped with scikit-image.
    Portrait("astronaut", "Eileen", "female", "skimage", ("data", "astronaut.png")),
    # Grace Hopper, US Navy photo (public domain), shipped with matplotlib.
    Portrait("grace_hopper", "Grace", "female", "matplotlib", ("mpl-data", "sample_data", "grace_hopper.jpg")),
)


def builtin_portraits() -> dict[str, tuple[str, str, Path]]:
    """Installed built-in portraits: avatar id -> (name, gender, image path)."""
    found = {p.avatar_id: (p.name, p.gender, p.path()) for p in BUILTIN_PORTRAITS}
    return {avatar_id: (name, gender, path) for avatar_id, (name, gender, path) in found.items() if path is not None}


@dataclass(frozen=True)
class Avatar:
    """An installed avatar."""

    avatar_id: str
    name: str
    gender: Gender
    image: Path
    official: bool = True

    def to_api(self, base_url: str) -> dict[str, Any]:
        """The avatar object of the list/detail API."""
        return {
            "_id": self.avatar_id,
            "uid": 0,
            "type": 2,
            "from": 2 if self.official else 3,
            "avatar_id": self.avatar_id,
            "voice_id": "",
            "name": self.name,
            "url": f"{base_url}/avatars/{self.avatar_id}/preview.jpg",
            "thumbnailUrl": f"{base_url}/avatars/{self.avatar_id}/thumbnail.jpg",
            "gender": self.gender,
            "available": True,
            "status": 3,
        }


def square_crop(image: Any) -> Any:
    """The largest square of a portrait, biased to the top where the face is."""
    height, width = image.shape[:2]
    side = min(height, width)
    top = max(0, min(height - side, (height - side) // 4))
    left = (width - side) // 2
    return image[top : top + side, left : left + side]


@functools.cache
def builder_sources(folder: Path = Path(__file__).parent) -> tuple[Path, ...]:
    """builder.py and every render module it imports, directly or through another one, sorted by name."""
    found: set[str] = set()
    todo = ["builder"]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_bytes())):
            if isinstance(node, ast.ImportFrom) and node.module == _RENDER[:-1]:
                modules = [_RENDER + alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            todo += [m.removeprefix(_RENDER) for m in modules if m.startswith(_RENDER)]
    return tuple(sorted(folder / f"{name}.py" for name in found))


def builder_version(folder: Path = Path(__file__).parent) -> str:
    """A fingerprint of the pack builder's code: packs built by other code are rebuilt."""
    digest = hashlib.sha256()
    for path in builder_sources(folder):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


class AvatarRegistry:
    """The avatars that are really installed, their packs (built once, cached on disk) and previews."""

    def __init__(self, cache_dir: Path, pack_dir: Path | None = None) -> None:
        self._cache_dir = cache_dir
        self._pack_dir = pack_dir or cache_dir / "packs"
        self._avatars: dict[str, Avatar] = {}
        self._portraits: dict[str, Any] = {}
        self._packs: dict[str, AvatarPack] = {}
        self._lock = threading.Lock()
        for portrait in BUILTIN_PORTRAITS:
            path = portrait.path()
            if path is not None:
                self._avatars[portrait.avatar_id] = Avatar(portrait.avatar_id, portrait.name, portrait.gender, path)
        for meta in sorted((cache_dir / "custom").glob("*.json")):
            info = json.loads(meta.read_text())
            image = meta.with_suffix(".png")
            if image.exists():
                gender: Gender = "male" if info.get("gender") == "male" else "female"
                self._avatars[meta.stem] = Avatar(meta.stem, str(info["name"]), gender, image, official=False)

    def list(self) -> list[Avatar]:
        """Every installed avatar, in a stable order."""
        return list(self._avatars.values())

    def get(self, avatar_id: str) -> Avatar | None:
        """The avatar with this id, if installed."""
        return self._avatars.get(avatar_id)

    def pack(self, avatar_id: str) -> AvatarPack:
        """The avatar's pack (built from its portrait the first time, then loaded once per process)."""
        with self._lock:
            pack = self._packs.get(avatar_id)
            if pack is None:
                pack = self._packs[avatar_id] = self._load_or_build(self._avatars[avatar_id])
            return pack

    def _load_or_build(self, avatar: Avatar) -> AvatarPack:
        path = self._pack_dir / f"{avatar.avatar_id}-{builder_version()}.npz"
        if path.exists():
            return AvatarPack.load(path)
        from liveavatar.render.builder import build_pack  # needs mediapipe: only when building

        log.info("building the avatar pack for %r (first use only)", avatar.avatar_id)
        image = cv2.imread(str(avatar.image), cv2.IMREAD_COLOR)
        pack = build_pack(image, avatar_id=avatar.avatar_id, name=avatar.name, gender=avatar.gender)
        self._pack_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pack.save(tmp)
        tmp.replace(path)
        return pack

    def add(self, image_path: Path, *, avatar_id: str, name: str, gender: str, progress: Any = None) -> Avatar:
        """Build a new avatar from a portrait photo (ParamError with a plain reason if it cannot be animated)."""
        from liveavatar.errors import ParamError
        from liveavatar.render.builder import build_pack

        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", avatar_id):
            raise ParamError("avatar id must be 1-64 letters, digits or underscores")
        if avatar_id in self._avatars and self._avatars[avatar_id].official:
            raise ParamError(f"{avatar_id!r} is a built-in avatar")
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise ParamError(f"cannot read an image from {image_path}")
        pack = build_pack(image, avatar_id=avatar_id, name=name, gender=gender, progress=progress)
        custom = self._cache_dir / "custom"
        custom.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(custom / f"{avatar_id}.png"), image)
        (custom / f"{avatar_id}.json").write_text(json.dumps({"name": name, "gender": gender}))
        avatar = Avatar(avatar_id, name, "male" if gender == "male" else "female", custom / f"{avatar_id}.png", False)
        self._pack_dir.mkdir(parents=True, exist_ok=True)
        pack.save(self._pack_dir / f"{avatar_id}-{builder_version()}.npz")
        with self._lock:
            self._avatars[avatar_id] = avatar
            self._packs[avatar_id] = pack
        return avatar

    def prepare(self) -> None:
        """Load (or build) every installed avatar's pack now, so that no session waits for one."""
        for avatar_id in self._avatars:
            self.pack(avatar_id)

    def portrait(self, avatar_id: str) -> Any:
        """The avatar's portrait as a 512x512 BGR image (loaded once, shared by every session)."""
        if avatar_id not in self._portraits:
            image = cv2.imread(str(self._avatars[avatar_id].image), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(self._avatars[avatar_id].image)
            square = square_crop(image)
            self._portraits[avatar_id] = cv2.resize(square, (PREVIEW_SIZE, PREVIEW_SIZE), interpolation=cv2.INTER_AREA)
        return self._portraits[avatar_id]

    def preview(self, avatar_id: str, kind: Literal["preview", "thumbnail"]) -> Path | None:
        """A JPEG preview (512 px) or thumbnail (160 px) of the avatar, made on first use."""
        avatar = self._avatars.get(avatar_id)
        if avatar is None:
            return None
        path = self._cache_dir / f"{avatar_id}-{kind}.jpg"
        if not path.exists():
            image = cv2.imread(str(avatar.image), cv2.IMREAD_COLOR)
            if image is None:
                return None
            side = PREVIEW_SIZE if kind == "preview" else THUMBNAIL_SIZE
            image = cv2.resize(square_crop(image), (side, side), interpolation=cv2.INTER_AREA)
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.jpg")
            cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            tmp.replace(path)
        return path
