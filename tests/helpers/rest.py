"""The app's REST API called as a script calls it (no gradio_client)."""

from __future__ import annotations

import json

import httpx

HISTORY = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + "words " * 65}
    for i in range(10)
]  # about 4,000 characters


def rest_chat(url: str, message: str, max_new_tokens: int = 2, history=HISTORY[:2]) -> dict:
    """One REST ``/chat`` call, read to its end, as a script does it (the bench's too)."""
    values = {
        "message": message,
        "history": history,
        "settings": {"strategy": "greedy", "max_new_tokens": max_new_tokens},
        "top_logprobs": 5,
    }
    with httpx.Client(base_url=url, timeout=120) as http:
        r = http.post("gradio_api/call/v2/chat", json=values)
        assert r.status_code == 200, r.text
        event = r.json()["event_id"]
        last = None
        with http.stream("GET", f"gradio_api/call/v2/chat/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    last = json.loads(line[5:])
    assert last and last[0]["reply"], last
    return last[0]
