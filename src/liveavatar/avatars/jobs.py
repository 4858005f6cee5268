"""Avatar builds in the background: one queue, one build at a time, resumed after a restart.

The avatar rows are the queue: an avatar still queueing (1) or processing (2) when the server stops is built
again when it starts. A fetched or uploaded source is kept in the avatar's folder until the build ends, so a
resumed build does not fetch it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

import cv2

from liveavatar.avatars.intake import MAX_SOURCE_BYTES, MAX_VIDEO_SECONDS, Portrait, read_portrait
from liveavatar.avatars.voice import matching_voice_id
from liveavatar.clock import new_id, now_ms
from liveavatar.errors import AlreadyExists, LiveAvatarError, NotFound, ParamError, ProcessingError
from liveavatar.fetch import fetch
from liveavatar.render.avatars import Avatar, AvatarRegistry
from liveavatar.render.detection import Framing
from liveavatar.render.pack import AvatarPack
from liveavatar.speech.voices import VoiceRegistry
from liveavatar.store import Store
from liveavatar.store.avatars import BUILDING, AvatarStatus
from liveavatar.store.models import AvatarRow

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
SOURCE: Final = "source"
"""File name of the fetched or uploaded original in the avatar's folder."""
PORTRAIT: Final = "portrait.png"
CLIP: Final = "clip"
"""A video avatar's source, kept after its build: newer builder code rebuilds its pack, loop included, from it."""
FETCH_TIMEOUT: Final = 120.0
GENDERS: Final = ("male", "female", "")


class Stopped(Exception):
    """A build ends early: its avatar was deleted, or the server is shutting down."""


class AvatarJobs:
    """Owns the build queue and its worker; the store keeps each avatar's status, the registry its pack."""

    def __init__(
        self,
        store: Store,
        registry: AvatarRegistry,
        voices: VoiceRegistry,
        *,
        allow_private_urls: bool = False,
        max_video_seconds: float = MAX_VIDEO_SECONDS,
    ) -> None:
        self.store = store
        self.registry = registry
        self.voices = voices
        self._allow_private_urls = allow_private_urls
        self._max_video_seconds = max_video_seconds
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._progress: dict[str, tuple[str, float]] = {}
        self._stopped: set[str] = set()
        self._closing = False

    def new_row(
        self,
        *,
        owner_id: int | None,
        avatar_id: str,
        name: str,
        source: str,
        url_from: int = 1,
        gender: str = "",
        voice_id: str | None = None,
        framing: Framing = "presenter",
    ) -> AvatarRow:
        """A queueing avatar row: checks the id and voice, picks the voice that matches the gender."""
        if self.registry.official(avatar_id) is not None:
            raise AlreadyExists(f"{avatar_id!r} is a built-in avatar")
        if gender not in GENDERS:
            raise ParamError("gender must be 'male', 'female' or empty")
        if voice_id and self.voices.get(voice_id) is None:
            raise NotFound(f"voice {voice_id!r} does not exist")
        now = now_ms()
        return AvatarRow(
            id=new_id(),
            owner_id=owner_id,
            avatar_id=avatar_id,
            name=name,
            gender=gender,
            voice_id=voice_id or matching_voice_id(self.voices, gender),
            source=source,
            url_from=url_from,
            framing=framing,
            status=int(AvatarStatus.QUEUEING),
            msg="",
            stage="queued",
            progress=0.0,
            create_time=now,
            update_time=now,
        )

    async def create(self, row: AvatarRow, upload: bytes | None = None, *, queue: bool = True) -> AvatarRow:
        """Store a new avatar (1222 when its id is taken) and queue its build; `upload`: the file itself."""
        folder = self.registry.folder(row.id)
        if upload is not None:
            await asyncio.to_thread(_write, folder / SOURCE, upload)
        try:
            await self.store.avatars.add(row)
        except LiveAvatarError:
            await asyncio.to_thread(self.registry.remove, row.id)
            raise
        if queue:
            self._queue.put_nowait(row.id)
        return row

    async def check_usable(self, avatar_id: str, owner_id: int) -> None:
        """Raise unless the key may start a session with this avatar now (1008 unknown, 1218 not ready)."""
        if self.registry.official(avatar_id) is not None:
            return
        row = await self.store.avatars.get(avatar_id, owner_id)
        if row is None:
            raise NotFound(f"avatar {avatar_id!r} does not exist")
        if row.status in BUILDING:
            raise ProcessingError(
                f"avatar {avatar_id!r} is still being built (status {row.status}); "
                "sessions can start once its status is 3"
            )
        if row.status == AvatarStatus.FAILED:
            raise ProcessingError(f"avatar {avatar_id!r} could not be built: {row.msg}")
        if self.registry.get(avatar_id, owner_id) is None:
            raise ProcessingError(f"the files of avatar {avatar_id!r} are missing on this server; create it again")

    def progress(self, row_id: str) -> tuple[str, float] | None:
        """The stage and share done of a build running now."""
        return self._progress.get(row_id)

    async def start(self) -> None:
        """Queue every avatar a previous server left unfinished, and start the worker."""
        for row in await self.store.avatars.building():
            log.info("resuming the build of avatar %r", row.avatar_id)
            self._queue.put_nowait(row.id)
        self._worker = asyncio.create_task(self._work(), name="avatar-builds")

    async def _work(self) -> None:
        while True:
            row_id = await self._queue.get()
            try:
                await self.build(row_id)
            except Exception:
                log.exception("building avatar %s failed", row_id)

    async def build(self, row_id: str, progress: Progress | None = None) -> AvatarRow | None:
        """Build one queued avatar now (the worker's step, and the CLI's whole job); the avatar's final row."""
        row = await self.store.avatars.by_id(row_id)
        if row is None or row.status not in BUILDING:
            return row
        row = await self.store.avatars.update(row_id, status=int(AvatarStatus.PROCESSING), stage="starting")
        if row is None:
            return None

        def report(stage: str, fraction: float) -> None:
            if row_id in self._stopped or self._closing:
                raise Stopped
            self._progress[row_id] = (stage, fraction)
            if progress is not None:
                progress(stage, fraction)

        try:
            data = await self._source(row, report)
            portrait, pack = await asyncio.to_thread(self._make, row, data, report)
            avatar = Avatar(
                row.avatar_id,
                row.name,
                row.gender,
                self.registry.folder(row.id) / PORTRAIT,
                official=False,
                key=row.id,
                owner_id=row.owner_id,
                voice_id=row.voice_id,
                framing=_framing(row.framing),
            )
            report("installing", 1.0)
            if pack.loop is not None:
                folder = self.registry.folder(row.id)
                await asyncio.to_thread((folder / SOURCE).replace, folder / CLIP)
            await asyncio.to_thread(self.registry.install, avatar, pack)
            note = "" if pack.loop is None else _loop_note(pack, portrait)
            done = await self.store.avatars.update(
                row_id, status=int(AvatarStatus.READY), stage="ready", progress=1.0, msg=note
            )
            if done is None:  # deleted while it was being built
                await asyncio.to_thread(self.registry.remove, row_id)
            return done
        except Stopped:
            if not self._closing:  # deleted: what the build wrote after the files were removed goes too
                await asyncio.to_thread(self.registry.remove, row_id)
            return None
        except LiveAvatarError as exc:
            log.info("avatar %r cannot be built: %s", row.avatar_id, exc.msg)
            return await self._fail(row_id, exc.msg)
        except Exception as exc:
            log.exception("building avatar %r failed", row.avatar_id)
            return await self._fail(row_id, f"building the avatar failed unexpectedly ({type(exc).__name__})")
        finally:
            self._progress.pop(row_id, None)
            self._stopped.discard(row_id)
            if not self._closing:  # a build cut off by shutdown keeps its source for the next server
                (self.registry.folder(row_id) / SOURCE).unlink(missing_ok=True)

    async def _fail(self, row_id: str, msg: str) -> AvatarRow | None:
        row = await self.store.avatars.update(row_id, status=int(AvatarStatus.FAILED), stage="failed", msg=msg)
        if row is None:
            await asyncio.to_thread(self.registry.remove, row_id)
        return row

    async def _source(self, row: AvatarRow, report: Progress) -> bytes:
        path = self.registry.folder(row.id) / SOURCE
        if path.is_file():
            return await asyncio.to_thread(path.read_bytes)
        if not row.source.startswith(("http://", "https://")):
            raise ProcessingError("the uploaded file is no longer there; create the avatar again")
        report("fetching the file", 0.0)
        fetched = await fetch(
            row.source, max_bytes=MAX_SOURCE_BYTES, timeout=FETCH_TIMEOUT, allow_private=self._allow_private_urls
        )
        await asyncio.to_thread(_write, path, fetched.content)
        return fetched.content

    def _make(self, row: AvatarRow, data: bytes, report: Progress) -> tuple[Portrait, AvatarPack]:
        from liveavatar.render.builder import build_pack  # needs mediapipe: only when building

        report("reading the file", 0.02)
        portrait = read_portrait(data, max_seconds=self._max_video_seconds, progress=report)
        folder = self.registry.folder(row.id)
        folder.mkdir(parents=True, exist_ok=True)
        candidates = [(portrait.note, portrait.image, portrait.seconds), *portrait.fallbacks]
        first_error: LiveAvatarError | None = None
        framing, size = _framing(row.framing), self.registry.size

        def step(stage: str, fraction: float) -> None:
            report(stage, 0.1 + 0.85 * fraction)

        for note, image, seconds in candidates:
            cv2.imwrite(str(folder / PORTRAIT), image)
            try:
                pack = build_pack(
                    image,
                    avatar_id=row.avatar_id,
                    name=row.name,
                    gender=row.gender,
                    framing=framing,
                    size=size,
                    clip=data if portrait.kind == "video" else None,  # the clip is the idle motion
                    clip_at=seconds,
                    progress=step,
                )
            except LiveAvatarError as exc:  # a video's next-best frame may still work
                log.info("avatar %r: %s cannot be used: %s", row.avatar_id, note or "the photo", exc.msg)
                first_error = first_error or exc
                continue
            return replace(portrait, image=image, note=note, seconds=seconds), pack
        assert first_error is not None
        raise first_error

    async def delete(self, avatar_id: str, owner_id: int | None) -> bool:
        """Delete an avatar (stopping its build) with its files; False when the owner has none by this id."""
        row = await self.store.avatars.delete(avatar_id, owner_id)
        if row is None:
            return False
        self._stopped.add(row.id)
        await asyncio.to_thread(self.registry.remove, row.id)
        return True

    async def aclose(self) -> None:
        """Stop the worker; a build in progress stops at its next step and is resumed by the next server."""
        self._closing = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)


def _loop_note(pack: AvatarPack, portrait: Portrait) -> str:
    assert pack.loop is not None
    seconds = len(pack.loop.frames) / pack.loop.fps
    return (
        f"built as a video loop of {seconds:.1f} s from {pack.loop.start:.1f} s on, played forth and back; "
        f"the mouth is modelled on {portrait.note}"
    )


def _framing(value: str) -> Framing:
    return "original" if value == "original" else "presenter"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
