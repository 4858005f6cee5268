"""The `liveavatar` command: serve, manage API keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from liveavatar import __version__
from liveavatar.config import Settings
from liveavatar.security import generate_key, hash_key, key_prefix
from liveavatar.store import Store

if TYPE_CHECKING:
    from liveavatar.render.avatars import AvatarRegistry

T = TypeVar("T")
app = typer.Typer(help="liveavatar: self-hosted streaming avatars.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Create, list, revoke and disable API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
avatar_app = typer.Typer(help="Build and list avatars.", no_args_is_help=True)
app.add_typer(avatar_app, name="avatar")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="LIVEAVATAR_DATA_DIR", help="Folder for everything the server writes."),
]


def load_settings(data_dir: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    given = {name: value for name, value in overrides.items() if value not in (None, [], ())}
    if data_dir is not None:
        given["data_dir"] = data_dir
    return Settings(**given)


def with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` against the migrated database."""

    async def run() -> T:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.resolved_database_url)
        try:
            await store.migrate()
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


async def _create_key(store: Store, name: str) -> str:
    key = generate_key()
    await store.keys.add(name, hash_key(key), key_prefix(key))
    return key


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080].")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the data dir).")] = None,
    public_url: Annotated[str | None, typer.Option(help="Base URL clients reach the server at.")] = None,
    ice_host: Annotated[list[str] | None, typer.Option(help="Host address to advertise for WebRTC (repeat).")] = None,
    max_sessions: Annotated[int | None, typer.Option(help="Live sessions held at once.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Worker processes holding sessions (0: inside this process) [default: one per core]."),
    ] = None,
) -> None:
    """Start the server."""
    import uvicorn

    from liveavatar.memory import tune_allocator

    tune_allocator()  # before uvicorn, aiortc and the speech engines start their threads

    from liveavatar.app import create_app

    settings = load_settings(
        data_dir,
        host=host,
        port=port,
        database_url=database_url,
        public_url=public_url,
        ice_hosts=ice_host,
        max_sessions=max_sessions,
        workers=workers,
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def first_start(store: Store) -> str | None:
        return None if await store.keys.all() else await _create_key(store, "default")

    first_key = with_store(settings, first_start)
    url = settings.public_url or f"http://{settings.host}:{settings.port}"
    typer.echo(f"liveavatar {__version__} on {url}")
    typer.echo(f"  demo page  {url}/")
    typer.echo(f"  API docs   {url}/docs")
    typer.echo(f"  data dir   {settings.data_dir}")
    if settings.ray_address:
        typer.echo(f"  sessions   on the Ray cluster at {settings.ray_address}")
    else:
        workers_now = settings.resolved_workers
        typer.echo(f"  sessions   {f'{workers_now} worker process(es)' if workers_now else 'in this process'}")
    if first_key:
        typer.echo("\nFirst start: created the API key 'default' (shown once, stored only as a hash):")
        typer.echo(f"  {first_key}")
        typer.echo(f"Try it:\n  curl -s -H 'x-api-key: {first_key}' {url}/api/open/v4/liveAvatar/avatar/list\n")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="A label for the key.")], data_dir: DataDir = None) -> None:
    """Create an API key and print it; the last line is the key alone."""
    key = with_store(load_settings(data_dir), lambda store: _create_key(store, name))
    typer.echo(f"Created API key {name!r}. It is shown only now; store it safely:")
    typer.echo(key)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List API keys (never the keys themselves)."""

    async def rows(store: Store) -> list[str]:
        lines = []
        for key in await store.keys.all():
            state = "revoked" if key.revoked_at else "disabled" if key.disabled else "active"
            created = datetime.fromtimestamp(key.created_at / 1000, UTC).strftime("%Y-%m-%d %H:%M")
            lines.append(f"{key.id:<5} {key.name:<24} {key.prefix}…  {state:<8} {created} UTC")
        return lines

    lines = with_store(load_settings(data_dir), rows)
    typer.echo(f"{'ID':<5} {'NAME':<24} {'KEY':<10}  {'STATE':<8} CREATED")
    for line in lines:
        typer.echo(line)


def _change_key(ref: str, data_dir: Path | None, verb: str, **change: bool) -> None:
    async def apply(store: Store) -> bool:
        key = await store.keys.find(ref)
        if key is None:
            return False
        await store.keys.update(key.id, **change)
        return True

    if not with_store(load_settings(data_dir), apply):
        typer.echo(f"no API key matches {ref!r} (use the id, name or prefix from `keys list`)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{verb} API key {ref!r}")


KeyRef = Annotated[str, typer.Argument(help="The key's id, name or prefix as `keys list` shows it.")]


@keys_app.command("revoke")
def keys_revoke(ref: KeyRef, data_dir: DataDir = None) -> None:
    """Revoke a key for good: it and its tokens stop working at once; a running server closes its sessions."""
    _change_key(ref, data_dir, "revoked", revoked=True)


@keys_app.command("disable")
def keys_disable(ref: KeyRef, data_dir: DataDir = None) -> None:
    """Disable a key's account (its requests get 1200, its live sessions close) until it is enabled again."""
    _change_key(ref, data_dir, "disabled", disabled=True)


@keys_app.command("enable")
def keys_enable(ref: KeyRef, data_dir: DataDir = None) -> None:
    """Enable a disabled key again."""
    _change_key(ref, data_dir, "enabled", disabled=False)


def _registry(settings: Settings) -> AvatarRegistry:
    from liveavatar.render.avatars import AvatarRegistry

    return AvatarRegistry(settings.data_dir / "avatars", settings.pack_dir, settings.video_size)


def _progress(stage: str, fraction: float) -> None:
    typer.echo(f"  [{fraction * 100:3.0f}%] {stage}")


async def _owner(store: Store, ref: str | None) -> int | None:
    if ref is None:
        return None
    key = await store.keys.find(ref)
    if key is None:
        typer.echo(f"no API key matches {ref!r} (use the id, name or prefix from `keys list`)", err=True)
        raise typer.Exit(1)
    return key.id


Owner = Annotated[
    str | None,
    typer.Option("--owner", help="API key (id, name or prefix) that owns the avatar; default: every key sees it."),
]


@avatar_app.command("build")
def avatar_build(
    source: Annotated[Path, typer.Argument(help="A portrait photo or a short video of one person facing the camera.")],
    avatar_id: Annotated[str, typer.Option("--id", help="Avatar id (letters and digits).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    gender: Annotated[str, typer.Option(help="female, male, or empty; picks the matching voice.")] = "",
    voice: Annotated[str | None, typer.Option(help="Default voice id (default: one matching the gender).")] = None,
    keep_framing: Annotated[
        bool, typer.Option("--keep-framing", help="Keep the photo's framing instead of zooming to head and shoulders.")
    ] = False,
    owner: Owner = None,
    data_dir: DataDir = None,
) -> None:
    """Build an avatar the way the API does (same checks, same files); the server lists it from then on."""
    import re

    from liveavatar.avatars.jobs import AvatarJobs
    from liveavatar.errors import LiveAvatarError
    from liveavatar.speech.voices import VoiceRegistry, discover_voices
    from liveavatar.store.avatars import AvatarStatus

    if not re.fullmatch(r"[a-zA-Z0-9]{1,64}", avatar_id):
        typer.echo("cannot build this avatar: the id must be 1-64 letters or digits", err=True)
        raise typer.Exit(1)
    settings = load_settings(data_dir)

    async def build(store: Store) -> str | None:
        jobs = AvatarJobs(store, _registry(settings), VoiceRegistry(discover_voices()))
        row = jobs.new_row(
            owner_id=await _owner(store, owner),
            avatar_id=avatar_id,
            name=name,
            source=f"file:{source.name}",
            gender=gender,
            voice_id=voice,
            framing="original" if keep_framing else "presenter",
        )
        await jobs.create(row, source.read_bytes(), queue=False)
        done = await jobs.build(row.id, progress=_progress)
        if done is None or done.status != AvatarStatus.READY:
            await jobs.delete(avatar_id, row.owner_id)  # nothing half-built stays behind
            return done.msg if done is not None else "the build was stopped"
        if done.msg:
            typer.echo(f"  note: {done.msg}")
        return None

    typer.echo(f"building avatar {avatar_id!r} from {source}")
    try:
        failed = with_store(settings, build)
    except LiveAvatarError as exc:
        failed = exc.msg
    except OSError as exc:
        failed = f"cannot read {source}: {exc.strerror or exc}"
    if failed:
        typer.echo(f"cannot build this avatar: {failed}", err=True)
        raise typer.Exit(1)
    typer.echo(f"avatar {avatar_id!r} is ready")


@avatar_app.command("list")
def avatar_list(data_dir: DataDir = None) -> None:
    """List built-in avatars and every custom avatar with its owner and build status."""
    settings = load_settings(data_dir)
    for avatar in _registry(settings).builtin():
        typer.echo(f"{avatar.avatar_id:<20} {avatar.name:<20} {avatar.gender:<8} built-in")

    async def rows(store: Store) -> list[str]:
        states = {1: "queueing", 2: "processing", 3: "ready", 4: "failed"}
        lines = []
        for row in await store.avatars.all():
            owner = f"key {row.owner_id}" if row.owner_id is not None else "every key"
            state = states.get(row.status, str(row.status))
            reason = f" ({row.msg})" if row.msg else ""
            lines.append(f"{row.avatar_id:<20} {row.name:<20} {row.gender or '-':<8} {state}, {owner}{reason}")
        return lines

    for line in with_store(settings, rows):
        typer.echo(line)


@avatar_app.command("delete")
def avatar_delete(
    avatar_id: Annotated[str, typer.Argument(help="The avatar's id.")], owner: Owner = None, data_dir: DataDir = None
) -> None:
    """Delete a custom avatar and its files."""
    from liveavatar.avatars.jobs import AvatarJobs
    from liveavatar.speech.voices import VoiceRegistry

    settings = load_settings(data_dir)

    async def delete(store: Store) -> bool:
        jobs = AvatarJobs(store, _registry(settings), VoiceRegistry([]))
        return await jobs.delete(avatar_id, await _owner(store, owner))

    if not with_store(settings, delete):
        typer.echo(f"no custom avatar {avatar_id!r} (with that owner)", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted avatar {avatar_id!r}")


@app.command()
def render(
    avatar: Annotated[str, typer.Option(help="Avatar id (see `avatar list`).")],
    text: Annotated[str, typer.Option(help="What the avatar says.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The MP4 file to write.")],
    voice: Annotated[str | None, typer.Option(help="Voice id (default: the language's voice).")] = None,
    language: Annotated[str | None, typer.Option(help="Language code, e.g. en, de.")] = None,
    speed: Annotated[float, typer.Option(min=0.8, max=1.2, help="Speaking rate.")] = 1.0,
    data_dir: DataDir = None,
) -> None:
    """Render a clip: the same audio and video a live session would send."""
    from liveavatar.avatars.voice import matching_voice
    from liveavatar.errors import LiveAvatarError
    from liveavatar.session.clip import render_clip
    from liveavatar.speech.voices import VoiceRegistry, discover_voices

    settings = load_settings(data_dir)
    registry = _registry(settings)
    voices = VoiceRegistry(discover_voices())
    found = registry.get(avatar)
    if found is None:
        typer.echo(f"no avatar {avatar!r}; installed: {', '.join(a.avatar_id for a in registry.list())}", err=True)
        raise typer.Exit(1)
    try:
        own = voices.get(found.voice_id) if found.voice_id else matching_voice(voices, found.gender)
        chosen = voices.get(voice) if voice else own if own and not language else voices.default_voice(language)
        if chosen is None:
            raise typer.BadParameter(f"no voice {voice!r}", param_hint="--voice")
        pack = registry.pack(found.pack_key)
        seconds = asyncio.run(
            render_clip(
                pack,
                text,
                output,
                tts=voices.tts_for(chosen),
                voice=chosen,
                speed=speed,
                progress=lambda f: typer.echo(f"  rendering {f * 100:3.0f}%"),
            )
        )
    except LiveAvatarError as exc:
        typer.echo(f"cannot render: {exc.msg}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {output} ({seconds:.1f} s, voice {chosen.voice_id})")


def main() -> None:
    """Entry point of the `liveavatar` script."""
    app()
