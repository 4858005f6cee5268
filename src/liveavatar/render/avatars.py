"""The avatar registry: which avatars are installed, with their previews."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2

Gender = Literal["male", "female"]
PREVIEW_SIZE = 512
THUMBNAIL_SIZE = 160


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


class AvatarRegistry:
    """The avatars that are really installed; preview images are made once into `cache_dir`."""

    def __init__(self, cache_dir: Path) -> None:
        self._cache_dir = cache_dir
        self._avatars: dict[str, Avatar] = {}
        self._portraits: dict[str, Any] = {}
        for portrait in BUILTIN_PORTRAITS:
            path = portrait.path()
            if path is not None:
                self._avatars[portrait.avatar_id] = Avatar(portrait.avatar_id, portrait.name, portrait.gender, path)

    def list(self) -> list[Avatar]:
        """Every installed avatar, in a stable order."""
        return list(self._avatars.values())

    def get(self, avatar_id: str) -> Avatar | None:
        """The avatar with this id, if installed."""
        return self._avatars.get(avatar_id)

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
