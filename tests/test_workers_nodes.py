"""Two API processes on one PostgreSQL: each fails only the sessions of nodes that are gone."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from apiclient import Api
from servers import Postgres, Server, create_key


@pytest.fixture(scope="module")
def backend() -> str:
    """Several API processes share one database only on PostgreSQL."""
    return "postgresql"


def test_a_restarted_api_process_fails_only_its_own_sessions(
    make_server: Callable[..., Server], postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> None:
    first = make_server().start()
    # The second API process: its own data dir (and port, so its own node id), the first one's database.
    second = Server(data_dir=tmp_path_factory.mktemp("data"), env=dict(first.env)).start()
    try:
        key = create_key(first.data_dir, "shared", first.env)
        mine, theirs = Api(first.url, key=key), Api(second.url, key=key)
        on_first = mine.create_session(duration=3600)
        on_second = theirs.create_session(duration=3600)

        first.stop(signal.SIGKILL)  # dies holding a session
        first.start()
        assert mine.session(on_first["_id"])["data"]["status"] == 4  # its own previous life: failed at start
        assert "restarted" in mine.session(on_first["_id"])["data"]["close_reason"]
        assert mine.session(on_second["_id"])["data"]["status"] == 1  # the other process's: untouched

        second.stop(signal.SIGKILL)  # dies and stays dead: its heartbeat stops
        deadline = time.monotonic() + 40
        while mine.session(on_second["_id"])["data"]["status"] != 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        detail = mine.session(on_second["_id"])["data"]
        assert detail == {**detail, "status": 4, "close_reason": "the server holding this session stopped"}
    finally:
        second.stop()
