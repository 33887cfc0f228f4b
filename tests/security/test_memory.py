"""Nothing is kept per REST call: the app's and Gradio's per-session tables stay bounded.

Part three, row 5: RSS grew about 0.15 MB per ``/chat`` call, without a
plateau (``bench/bench_memory.py`` measures it). Each REST call is a session
of its own; Gradio kept every one's state (up to 10,000 sessions) and the
guard remembered every one's last listener.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import start_studio
from tests.helpers.rest import rest_chat

CALLS = 12


@pytest.fixture(scope="module")
def studio(gguf_backend, tmp_path_factory):
    studio = start_studio(gguf_backend, tmp_path_factory.mktemp("memory"))
    yield studio
    studio.close()


def tables(studio) -> dict[str, int]:
    """The size of every table that used to grow with each call."""
    queue = studio.demo._queue
    return {
        "gradio sessions": len(studio.demo.state_holder.session_data),
        "gradio pending ids": len(queue.pending_event_ids_session),
        "gradio pending messages": len(queue.pending_messages_per_session),
        "access sessions": len(studio.access.live()),
        "guard last listened": len(studio.guard._last_listened),
        "stop buttons": len(studio.ui.chat._cancel),
    }


def test_rest_calls_leave_nothing_behind(studio):
    url = f"http://127.0.0.1:{studio.config.port}/"
    for i in range(CALLS):
        rest_chat(url, f"Question {i}: name a colour.")
    deadline = time.time() + 20  # the guard forgets listeners GRACE_S (5 s) after they left
    while time.time() < deadline and any(tables(studio).values()):
        time.sleep(0.5)
    assert not any(tables(studio).values()), tables(studio)
