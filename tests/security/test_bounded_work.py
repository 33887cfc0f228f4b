"""Bounded work: /compare and /export_dataset (issue "Safe to share, part three": 2, 3, 11).

/compare holds each strategy to the reply-token and time limits, runs at most
four, and stops once nobody reads its result; a /chat queued behind it gets a
reply or an error, never ``null``. /export_dataset finds near duplicates
without comparing every pair, and stops once nobody waits. Bad input to either
is one sentence saying what to send, never a Python message.
"""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.security.conftest import start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]

LONG = {"strategy": "sample", "seed": 3, "temperature": 2.0, "top_p": 1.0, "top_k": 0}  # never ends
PYTHON = ("object has no attribute", "not supported between", "is not iterable", "index out of")


@pytest.fixture(scope="module")
def quick_app(tmp_path_factory):
    """An app that allows one generation 3 seconds."""
    app = start_app(tmp_path_factory.mktemp("quick"), "--max-request-seconds", "3")
    yield app
    app.stop()


def one_sentence(err: AppError) -> str:
    text = str(err)
    assert not any(p in text for p in PYTHON), text
    assert "Traceback" not in text and text.count(". ") == 0, text
    return text


def busy_seconds(app, window: float = 3.0) -> float:
    """CPU seconds the app's process used during ``window`` seconds."""
    proc = psutil.Process(app.proc.pid)
    before = sum(proc.cpu_times()[:2])
    time.sleep(window)
    return sum(proc.cpu_times()[:2]) - before


def long_story(n: int) -> list[dict]:
    return [{"label": f"sample {i}", "settings": dict(LONG, seed=i)} for i in range(n)]


def test_compare_runs_at_most_four_strategies(public_app):
    client = Client(public_app.url, verbose=False)
    strategies = [{"label": str(i), "settings": {"strategy": "greedy"}} for i in range(300)]
    with pytest.raises(AppError) as err:
        client.predict(message="Hi", strategies=strategies, api_name="/compare")
    assert "strategies" in one_sentence(err.value) and "at most 4" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"strategies": "greedy"}, "strategies"),
        ({"strategies": ["greedy"]}, "strategies[0]"),
        ({"max_new_tokens": "x"}, "max_new_tokens"),
        ({"max_new_tokens": 5000}, "max_new_tokens"),
        ({"strategies": [{"settings": {"max_new_tokens": 5000}}]}, "max_new_tokens"),
    ],
)
def test_bad_compare_input_is_one_sentence(public_app, kwargs, field):
    client = Client(public_app.url, verbose=False)
    with pytest.raises(AppError) as err:
        client.predict(message="Hi", api_name="/compare", **kwargs)
    assert field in one_sentence(err.value)


def test_compare_stops_each_strategy_at_the_time_limit(quick_app):
    client = Client(quick_app.url, verbose=False)
    rows = client.predict(
        message="Write a very long story about a dragon.",
        strategies=long_story(1),
        max_new_tokens=2048,
        api_name="/compare",
    )
    assert rows[0]["finish_reason"] == "time_limit", rows
    assert rows[0]["tokens"] < 2048
    assert busy_seconds(quick_app) < 0.5  # nothing goes on generating


def test_a_comparison_nobody_reads_stops(public_app):
    """Four long strategies under a 60 s limit, the result never read: the model goes idle."""
    r = httpx.post(
        public_app.url + "gradio_api/call/v2/compare",
        json={"message": "Write a very long story.", "strategies": long_story(4),
              "max_new_tokens": 2048},  # fmt: skip
        timeout=30,
    )
    assert r.status_code == 200, r.text
    url = public_app.url + f"gradio_api/call/v2/compare/{r.json()['event_id']}"
    try:  # start reading, then hang up after 2 s
        with httpx.stream("GET", url, timeout=httpx.Timeout(30, read=2)) as stream:
            for _ in stream.iter_lines():
                pass
    except httpx.ReadTimeout:
        pass
    time.sleep(9)  # the guard gives a caller 5 s to come back
    assert busy_seconds(public_app) < 0.5


def test_a_chat_queued_behind_a_comparison_gets_an_answer(quick_app):
    comparer = Client(quick_app.url, verbose=False)
    job = comparer.submit(
        message="Write a very long story.",
        strategies=long_story(2),
        max_new_tokens=2048,
        api_name="/compare",
    )
    time.sleep(1)  # the comparison takes the model first, then the chat queues behind it
    client = Client(quick_app.url, verbose=False)
    try:
        out = client.predict(
            message="Say hi.", settings={"strategy": "greedy", "max_new_tokens": 8},
            api_name="/chat",
        )  # fmt: skip
        assert out is not None and out["reply"] is not None
    except AppError as err:  # it waited for the model all the time it may take
        assert "--max-request-seconds" in one_sentence(err)
    try:
        assert len(job.result()) == 2
    except AppError as err:  # a strategy may wait behind the chat as long, too
        assert "--max-request-seconds" in one_sentence(err)


def chat(n: int) -> dict:
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": f"message {i}"} for i in range(n)]}


def test_exporting_a_thousand_messages_returns(public_app):
    """1,000 messages (38 KB) took 121 s of CPU with the all-pairs difflib check."""
    done = []

    def export():
        client = Client(public_app.url, verbose=False)
        done.append(client.predict(kind="sft", conversations=[chat(1000)],
                                   api_name="/export_dataset"))  # fmt: skip

    worker = threading.Thread(target=export, daemon=True)
    worker.start()
    worker.join(timeout=90)
    assert done, "the export did not return"
    rows = done[0].splitlines()
    assert 0 < len(rows) < 1000  # the rows that grow by little are near duplicates


@pytest.mark.parametrize(
    "message, field",
    [
        ({"role": "assistant", "content": "B", "versions": 5}, "versions"),
        ({"role": "assistant", "content": "B", "versions": [{"content": "A"}, {"content": "B"}],
          "current": 7}, "current"),
        ({"role": "assistant", "content": "B", "meta": {"candidates": ["A", "B"], "chosen": 9}},
         "chosen"),
        ({"role": "assistant", "content": "B", "meta": {"candidates": [1, 2]}}, "candidates"),
        ({"role": "assistant", "content": "B", "meta": "x"}, "meta"),
    ],
)  # fmt: skip
def test_crafted_chats_are_one_sentence(public_app, message, field):
    client = Client(public_app.url, verbose=False)
    messages = [{"role": "user", "content": "A?"}, message]
    with pytest.raises(AppError) as err:
        client.predict(kind="preference", conversations=[messages], api_name="/export_dataset")
    assert field in one_sentence(err.value)
