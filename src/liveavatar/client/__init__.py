"""Python client for liveavatar: create sessions over REST, join them over WebRTC.

async with LiveAvatarApi("http://127.0.0.1:8080", api_key=KEY) as api:
    session = await api.create_session("astronaut", duration=300)
conn = await Connection.join(session["credentials"], ice_hosts=["127.0.0.1"])
conn.send_chat("Hello there!")
print(await conn.bot_reply())
frame = await conn.video.get()          # av.VideoFrame, 25 fps
await conn.aclose()

A session created with `render="client"` sends no video: join it with `render="client"` and read the face
(`conn.faces`: audio position -> FaceState, docs/animation-stream.md) beside the audio.
"""

from liveavatar.client.connection import Connection
from liveavatar.client.media import MicrophoneTrack, read_wav
from liveavatar.client.rest import ApiError, LiveAvatarApi

__all__ = ["ApiError", "Connection", "LiveAvatarApi", "MicrophoneTrack", "read_wav"]
