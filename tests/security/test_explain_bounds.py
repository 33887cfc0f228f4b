"""The explain endpoints on a running app: bounded input, bounded work, one-sentence errors.

``/attribute``, ``/logit_lens``, ``/neurons``, ``/neuron`` and ``/calibration``
take what a stranger sends: every id and number is checked against the loaded
model before it reaches native code, every mistake is one sentence, and the
work stops at ``--max-request-seconds`` or when the caller leaves.
"""

from __future__ import annotations

import time

import httpx
import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.security.conftest import PUBLIC_LIMITS, start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]
PYTHON = ("Traceback", "invalid literal", "validation error for", "pydantic", "object has no")
LONG_TEXT = " ".join(f"Sentence number {i} says something about the weather." for i in range(40))


@pytest.fixture(scope="module")
def quick_app(tmp_path_factory):
    """A public app whose requests may run 4 s at most."""
    limits = [x for x in PUBLIC_LIMITS]
    limits[limits.index("--max-request-seconds") + 1] = "4"
    app = start_app(tmp_path_factory.mktemp("explain"), "--host", "0.0.0.0", *limits)
    yield app
    app.stop()


def _sentence(err: AppError) -> str:
    text = str(err)
    assert not any(p in text for p in PYTHON), text
    return text


def _alive(app) -> None:
    out = Client(app.url, verbose=False).predict(
        message="Say hi.", settings={"strategy": "greedy", "max_new_tokens": 4}, api_name="/chat"
    )
    assert out["reply"] is not None


@pytest.mark.parametrize(
    "values, says",
    [
        ({"text": "Hi.", "reply_ids": [49152], "token": 0}, "not a token of this model"),
        ({"text": "Hi.", "reply_ids": [-1], "token": 0}, "not a token of this model"),
        ({"text": "Hi.", "reply_ids": ["x"], "token": 0}, "reply_ids"),
        ({"text": "Hi.", "n_samples": "many"}, "n_samples"),
        ({"text": "Hi.", "level": "tokens", "method": "ablation"}, "gradient method"),
        ({"messages": [{"role": "user", "content": "x" * 20000}] * 3}, "characters"),
        ({"text": "Hi.", "token": 5, "reply": "Hello"}, "token"),
    ],
)
def test_attribute_refuses_bad_input_in_one_sentence(quick_app, values, says):
    with pytest.raises(AppError, match=says) as err:
        Client(quick_app.url, verbose=False).predict(**values, api_name="/attribute")
    _sentence(err.value)


def test_neuron_and_calibration_numbers_are_checked(quick_app):
    client = Client(quick_app.url, verbose=False)
    for kwargs, api, says in (
        ({"layer": "abc", "index": 0}, "/neuron", "layer"),
        ({"layer": 0, "index": -5}, "/neuron", "index"),
        ({"question_set": "all", "limit": 10**9}, "/calibration", "limit"),
        ({"question_set": "../../etc"}, "/calibration", "question_set"),
    ):
        with pytest.raises(AppError, match=says) as err:
            client.predict(**kwargs, api_name=api)
        _sentence(err.value)
    _alive(quick_app)


def test_attribution_stops_at_the_request_time_limit(quick_app):
    """KernelSHAP with 400 samples over 40 sentences would run for minutes: 4 s, then it stops."""
    client = Client(quick_app.url, verbose=False)
    started = time.monotonic()
    with pytest.raises(AppError, match="--max-request-seconds") as err:
        client.predict(
            text=LONG_TEXT, reply=" The weather.", level="sentences", method="kernel_shap",
            n_samples=400, api_name="/attribute",
        )  # fmt: skip
    _sentence(err.value)
    assert time.monotonic() - started < 120
    _alive(quick_app)


def test_attribution_nobody_reads_stops(quick_app):
    """A long attribution whose result is never read: the app goes idle soon after."""
    r = httpx.post(
        quick_app.url + "gradio_api/call/v2/attribute",
        json={
            "text": LONG_TEXT,
            "reply": " The weather.",
            "level": "sentences",
            "method": "kernel_shap",
            "n_samples": 400,
        },  # fmt: skip
        timeout=30,
    )
    assert r.status_code == 200, r.text
    time.sleep(12)  # nobody reads it; the guard and the time limit both end it
    proc = psutil.Process(quick_app.proc.pid)
    before = sum(proc.cpu_times()[:2])
    time.sleep(3)
    assert sum(proc.cpu_times()[:2]) - before < 0.6
