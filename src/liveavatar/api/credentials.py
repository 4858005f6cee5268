"""Join credentials of a session, in liveavatar's own shape plus the chosen provider's field names.

The provider fields join liveavatar (through its compatibility clients in `web/compat/`), never the
provider's cloud: the app id / URL field carries the server's base URL (with the ICE servers in its
fragment when any are configured), the channel / room the session id, the token / user sig the join token.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

STREAM_TYPES: Final = ("agora", "livekit", "trtc", "webrtc")
AVATAR_IDENTITY: Final = "avatar"
"""The avatar's user id / identity in the provider-shaped credentials and compatibility clients."""


def join_base(base: str, ice_servers: list[dict[str, Any]]) -> str:
    """The server's base URL, with `#ice=<base64url JSON>` when there are ICE servers to use."""
    if not ice_servers:
        return base
    encoded = base64.urlsafe_b64encode(json.dumps(ice_servers, separators=(",", ":")).encode()).rstrip(b"=")
    return f"{base}#ice={encoded.decode()}"


def client_uid(session_id: str) -> int:
    """A stable numeric Agora uid for the session's client (never the avatar's uid 1)."""
    digits = "".join(ch for ch in session_id if ch in "0123456789abcdefABCDEF")[-8:] or "0"
    return 2 + int(digits, 16) % (2**31 - 2)


def credentials(
    stream_type: str, session_id: str, base: str, token: str, ice_servers: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything a client needs to join: liveavatar's fields, plus the provider's when one was chosen."""
    own: dict[str, Any] = {
        "webrtc_url": f"{base}/api/open/v4/liveAvatar/webrtc/{session_id}/offer",
        "webrtc_token": token,
        "ice_servers": ice_servers,
    }
    url = join_base(base, ice_servers)
    client = f"client-{session_id}"
    if stream_type == "agora":
        own |= {
            "agora_app_id": url,
            "agora_channel": session_id,
            "agora_token": token,
            "agora_uid": client_uid(session_id),
        }
    elif stream_type == "livekit":
        own |= {
            "livekit_url": url,
            "livekit_token": token,
            "livekit_room_name": session_id,
            "livekit_server_identity": AVATAR_IDENTITY,
            "livekit_client_identity": client,
        }
    elif stream_type == "trtc":
        trtc = {"app_id": url, "room_id": session_id, "user_id": client, "user_sig": token}
        # The API reference says trtc_sdk_*, AKool's public demo reads trtc_*: both are given.
        own |= {f"trtc_sdk_{key}": value for key, value in trtc.items()}
        own |= {f"trtc_{key}": value for key, value in trtc.items()}
    return own
