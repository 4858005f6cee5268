"""The avatar registry: which avatars are installed, with their previews."""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2

from liveavatar.errors import LiveAvatarError
from liveavatar.render.detection import SIZE, Framing
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
    """An installed avatar: a built-in portrait, or a custom avatar whose pack is ready."""

    avatar_id: str
    name: str
    gender: str
    """"male", "female", or "" when nobody said."""
    image: Path
    official: bool = True
    key: str = ""
    """What the registry files it under: the avatar id for built-ins, the database row id for custom avatars."""
    owner_id: int | None = None
    """The API key a custom avatar belongs to; None: every key sees it."""
    voice_id: str = ""
    """The voice it speaks with unless a session asks for another; "" lets the server choose."""
    framing: Framing = "presenter"

    @property
    def pack_key(self) -> str:
        """The registry key of the avatar's pack."""
        return self.key or self.avatar_id

    def to_api(self, base_url: str, voice_id: str = "") -> dict[str, Any]:
        """The avatar object of the list/detail API (built-in avatars)."""
        return {
            "_id": self.pack_key,
            "uid": 0,
            "type": 2,
            "from": 2 if self.official else 3,
            "avatar_id": self.avatar_id,
            "voice_id": self.voice_id or voice_id,
            "name": self.name,
            "url": f"{base_url}/avatars/{self.pack_key}/preview.jpg",
            "thumbnailUrl": f"{base_url}/avatars/{self.pack_key}/thumbnail.jpg",
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
    """The avatars that are really installed, their packs (built once, cached on disk) and previews.

    Built-in avatars come from packages; custom ones from `<cache_dir>/custom/<key>/avatar.json`, written when
    their pack is ready, so any process on the machine that hosts sessions finds them on disk.
    """

    def __init__(self, cache_dir: Path, pack_dir: Path | None = None, size: tuple[int, int] = (SIZE, SIZE)) -> None:
        self.size = size
        """Frame size (width, height) every pack of this registry is built at."""
        self._cache_dir = cache_dir
        self._pack_dir = pack_dir or cache_dir / "packs"
        self._custom_dir = cache_dir / "custom"
        self._avatars: dict[str, Avatar] = {}
        self._index: dict[tuple[int | None, str], str] = {}
        self._portraits: dict[str, Any] = {}
        self._packs: dict[str, AvatarPack] = {}
        self._lock = threading.Lock()
        for portrait in BUILTIN_PORTRAITS:
            path = portrait.path()
            if path is not None:
                self._avatars[portrait.avatar_id] = Avatar(
                    portrait.avatar_id, portrait.name, portrait.gender, path, key=portrait.avatar_id
                )
        self._scan()

    def _scan(self) -> None:
        for meta in sorted(self._custom_dir.glob("*/avatar.json")):
            try:
                info = json.loads(meta.read_text())
                avatar = Avatar(
                    str(info["avatar_id"]),
                    str(info["name"]),
                    str(info.get("gender") or ""),
                    meta.with_name("portrait.png"),
                    official=False,
                    key=meta.parent.name,
                    owner_id=info.get("owner_id"),
                    voice_id=str(info.get("voice_id") or ""),
                    framing="original" if info.get("framing") == "original" else "presenter",
                )
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping the custom avatar in %s: %s", meta.parent, exc)
                continue
            self._remember(avatar)

    def _remember(self, avatar: Avatar) -> None:
        with self._lock:
            self._avatars[avatar.pack_key] = avatar
            self._index[(avatar.owner_id, avatar.avatar_id)] = avatar.pack_key

    def list(self) -> list[Avatar]:
        """Every built-in avatar and every ready custom avatar of the operator (visible to all keys)."""
        return [avatar for avatar in self._avatars.values() if avatar.owner_id is None]

    def builtin(self) -> builtins.list[Avatar]:
        """The built-in avatars."""
        return [avatar for avatar in self._avatars.values() if avatar.official]

    def official(self, avatar_id: str) -> Avatar | None:
        """The built-in avatar with this id (never looks on disk)."""
        avatar = self._avatars.get(avatar_id)
        return avatar if avatar is not None and avatar.official else None

    def get(self, avatar_id: str, owner_id: int | None = None) -> Avatar | None:
        """The ready avatar `owner_id` knows by this id: built-in, its own, or the operator's."""
        for attempt in range(2):
            avatar = self._avatars.get(avatar_id)
            if avatar is not None and avatar.official:
                return avatar
            key = self._index.get((owner_id, avatar_id)) if owner_id is not None else None
            key = key or self._index.get((None, avatar_id))
            if key is not None and key in self._avatars:
                return self._avatars[key]
            if attempt == 0:
                self._scan()  # built by another process (the CLI, the API process) since we last looked
        return None

    def by_key(self, key: str) -> Avatar | None:
        """The avatar filed under this key."""
        return self._avatars.get(key)

    def folder(self, key: str) -> Path:
        """Where a custom avatar's files live (source, portrait, preview, avatar.json)."""
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", key):
            raise ValueError(f"bad avatar key {key!r}")
        return self._custom_dir / key

    def pack(self, key: str) -> AvatarPack:
        """The avatar's pack (built from its portrait the first time, then loaded once per process)."""
        if key not in self._avatars:
            self._scan()
        with self._lock:
            pack = self._packs.get(key)
            if pack is None:
                pack = self._packs[key] = self._load_or_build(self._avatars[key])
            return pack

    def is_video(self, key: str) -> bool:
        """Whether the avatar was built from a video (its pack plays the kept clip)."""
        avatar = self.by_key(key)
        return avatar is not None and not avatar.official and (self.folder(key) / "clip").is_file()

    def pack_path(self, key: str) -> Path:
        """Where the avatar's pack file is cached (written the first time pack() builds it)."""
        return self._pack_path(key)

    def _pack_path(self, key: str) -> Path:
        sized = "" if self.size == (SIZE, SIZE) else f"-{self.size[0]}x{self.size[1]}"
        return self._pack_dir / f"{key}-{builder_version()}{sized}.npz"

    def _load_or_build(self, avatar: Avatar) -> AvatarPack:
        path = self._pack_path(avatar.pack_key)
        if path.exists():
            return AvatarPack.load(path)
        from liveavatar.render.builder import build_pack  # needs mediapipe: only when building

        log.info("building the avatar pack for %r (first use only)", avatar.avatar_id)
        clip: bytes | None = None
        image: Any  # a BGR uint8 array (as cv2 and read_portrait give it)
        if self.is_video(avatar.pack_key):  # a video avatar: its loop is rebuilt from the kept clip
            from liveavatar.avatars.intake import read_portrait

            clip = (self.folder(avatar.pack_key) / "clip").read_bytes()
            portrait = read_portrait(clip)
            image, clip_at = portrait.image, portrait.seconds
        else:
            image, clip_at = cv2.imread(str(avatar.image), cv2.IMREAD_COLOR), 0.0
        pack = build_pack(
            image,
            avatar_id=avatar.avatar_id,
            name=avatar.name,
            gender=avatar.gender,
            framing=avatar.framing,
            size=self.size,
            clip=clip,
            clip_at=clip_at,
        )
        self._save_pack(avatar.pack_key, pack)
        return pack

    def _save_pack(self, key: str, pack: AvatarPack) -> None:
        path = self._pack_path(key)
        self._pack_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pack.save(tmp)
        tmp.replace(path)

    def install(self, avatar: Avatar, pack: AvatarPack) -> None:
        """Make a custom avatar whose pack was just built usable: files on disk, pack in memory."""
        folder = self.folder(avatar.pack_key)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_pack(avatar.pack_key, pack)
        cv2.imwrite(str(folder / "preview.png"), pack.image)
        info = {
            "avatar_id": avatar.avatar_id,
            "name": avatar.name,
            "gender": avatar.gender,
            "owner_id": avatar.owner_id,
            "voice_id": avatar.voice_id,
            "framing": avatar.framing,
        }
        tmp = folder / "avatar.json.tmp"
        tmp.write_text(json.dumps(info))
        tmp.replace(folder / "avatar.json")  # written last: a process that sees it finds everything else
        with self._lock:
            self._packs[avatar.pack_key] = pack
        self._remember(avatar)

    def remove(self, key: str) -> None:
        """Forget a custom avatar and delete its files, pack and previews (nothing for built-ins)."""
        avatar = self._avatars.get(key)
        if avatar is not None and avatar.official:
            return
        with self._lock:
            if avatar is not None:
                self._avatars.pop(key, None)
                self._index.pop((avatar.owner_id, avatar.avatar_id), None)
            self._packs.pop(key, None)
            self._portraits.pop(key, None)
        shutil.rmtree(self.folder(key), ignore_errors=True)
        packs = [*self._pack_dir.glob(f"{key}-*.npz"), *self._pack_dir.glob(f"{key}-*.web*.gz")]
        for path in [*packs, *self._cache_dir.glob(f"{key}-*.jpg")]:
            path.unlink(missing_ok=True)

    def stale(self) -> builtins.list[str]:
        """Keys of installed avatars whose pack was built by other builder code (rebuilt on first use)."""
        return [key for key in self._avatars if not self._pack_path(key).exists()]

    def prepare(self, keys: Iterable[str] | None = None) -> None:
        """Load (or build) these avatars' packs now (default: all), so that no session waits for one.

        An avatar whose pack cannot be built (at this video size) is logged and left out, not fatal.
        """
        for key in list(self._avatars) if keys is None else keys:
            try:
                self.pack(key)
            except LiveAvatarError as exc:
                log.error("avatar %r cannot be built at %dx%d (%s); it is left out", key, *self.size, exc.msg)
                with self._lock:
                    avatar = self._avatars.pop(key, None)
                    if avatar is not None:
                        self._index.pop((avatar.owner_id, avatar.avatar_id), None)

    def portrait(self, key: str) -> Any:
        """The avatar's portrait as a 512x512 BGR image (loaded once, shared by every session)."""
        if key not in self._portraits:
            image = cv2.imread(str(self._avatars[key].image), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(self._avatars[key].image)
            square = square_crop(image)
            self._portraits[key] = cv2.resize(square, (PREVIEW_SIZE, PREVIEW_SIZE), interpolation=cv2.INTER_AREA)
        return self._portraits[key]

    def _preview_source(self, key: str) -> Path | None:
        avatar = self._avatars.get(key)
        if avatar is not None and avatar.official:
            return avatar.image
        try:
            folder = self.folder(key)
        except ValueError:
            return None
        for name in ("preview.png", "portrait.png"):
            if (folder / name).is_file():
                return folder / name
        return None

    def preview(self, key: str, kind: Literal["preview", "thumbnail"]) -> Path | None:
        """A JPEG preview (512 px) or thumbnail (160 px) of the avatar (also while it is being built)."""
        source = self._preview_source(key)
        if source is None:
            return None
        path = self._cache_dir / f"{key}-{kind}.jpg"
        if not path.exists() or path.stat().st_mtime < source.stat().st_mtime:
            image = cv2.imread(str(source), cv2.IMREAD_COLOR)
            if image is None:
                return None
            side = PREVIEW_SIZE if kind == "preview" else THUMBNAIL_SIZE
            image = cv2.resize(square_crop(image), (side, side), interpolation=cv2.INTER_AREA)
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.jpg")
            cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            tmp.replace(path)
        return path
