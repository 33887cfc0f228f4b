"""Training on a shared app: who may train, whose jobs and adapters are whose, and the caps.

Issue 20, section 7. The public app (no logins, nobody an admin) refuses training
outright; a second public app started with ``--allow-training`` and small caps trains a
tiny model folder made here (seconds), so jobs really run.
"""

from __future__ import annotations

import json
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.helpers.tiny_models import save_tiny
from tests.security.conftest import start_app

# A real app training a tiny model in a child process: seconds per test, outside the
# one-minute tier.
pytestmark = pytest.mark.slow

LIKED = [
    {"role": "user", "content": "What is 7 plus 8?"},
    {"role": "assistant", "content": "7 + 8 = 15", "feedback": "like"},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris.", "feedback": "like"},
]


@pytest.fixture(scope="module")
def training_app(tmp_path_factory):
    """A public app that lets visitors train (--allow-training), with small caps."""
    data = tmp_path_factory.mktemp("train-public")
    tiny = save_tiny("llama", data / "tiny")
    app = start_app(
        data, "--host", "0.0.0.0", "--model", tiny, "--backend", "transformers",
        "--allow-training", "--max-train-rows", "20", "--max-train-upload-mb", "0.01",
        "--max-train-minutes", "2",
    )  # fmt: skip
    yield app
    app.stop()


def one_sentence(text: str) -> bool:
    return text.count(". ") <= 1 and "\n" not in text and "Traceback" not in text


def test_a_visitor_may_not_train_on_a_shared_app_without_allow_training(public_app):
    visitor = Client(public_app.url, verbose=False)
    with pytest.raises(AppError, match="only admins may train") as err:
        visitor.predict(conversations=[LIKED], api_name="/train")
    assert "--allow-training" in str(err.value)
    assert visitor.predict(api_name="/adapters") == []
    with pytest.raises(AppError, match="No training job"):
        visitor.predict(job="0" * 12, api_name="/train_status")
    with pytest.raises(AppError, match="No training job"):
        visitor.predict(job="0" * 12, api_name="/train_stop")
    with pytest.raises(AppError, match="No reward model"):
        visitor.predict(prompt="Hi", reply="Hello", api_name="/reward")


def test_bad_settings_and_oversize_data_are_refused_in_one_sentence(training_app):
    visitor = Client(training_app.url, verbose=False)
    for settings, says in [
        ({"method": {"method": "full"}}, "settings.method.method"),
        ({"max_steps": 10**9}, "settings.max_steps"),
        ({"batch": 4}, "settings.batch: unknown argument"),
    ]:
        with pytest.raises(AppError) as err:
            visitor.predict(conversations=[LIKED], settings=settings, api_name="/train")
        assert str(err.value).count(says) == 1 and one_sentence(str(err.value)), err.value
    rows = "\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(400))
    with pytest.raises(AppError, match="--max-train-upload-mb"):
        visitor.predict(source="jsonl", jsonl=rows, api_name="/train")
    with pytest.raises(AppError, match="--max-train-rows"):
        visitor.predict(source="jsonl", jsonl=rows[:1500], api_name="/train")
    with pytest.raises(AppError, match="No preference pairs"):
        visitor.predict(conversations=[LIKED], settings={"kind": "dpo"}, api_name="/train")
    with pytest.raises(AppError, match="job"):
        visitor.predict(job="x" * 5000, api_name="/train_status")


def wait_over(client, job, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.predict(job=job, api_name="/train_status")
        if status["state"] not in ("starting", "running"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"the job never ended: {status}")


def test_one_job_at_a_time_and_nobody_sees_or_stops_anothers(training_app):
    owner = Client(training_app.url, verbose=False)
    stranger = Client(training_app.url, verbose=False)
    settings = {"max_steps": 400, "batch_size": 1, "eval_every": 5, "eval_share": 0.0}
    job = owner.predict(conversations=[LIKED], settings=settings, api_name="/train")["job"]
    with pytest.raises(AppError, match="one at a time"):
        stranger.predict(conversations=[LIKED], settings={"max_steps": 2}, api_name="/train")
    for endpoint in ("/train_status", "/train_stop"):
        with pytest.raises(AppError, match="No training job"):
            stranger.predict(job=job, api_name=endpoint)
    stopped = owner.predict(job=job, api_name="/train_stop")
    final = wait_over(owner, job) if stopped["state"] in ("starting", "running") else stopped
    assert final["state"] in ("stopped", "finished"), final
    mine = owner.predict(api_name="/adapters")
    assert stranger.predict(api_name="/adapters") == []
    if final["adapter"]:  # a checkpoint was finished before Stop: it is the owner's alone
        assert [a["id"] for a in mine] == [final["adapter"]]
        with pytest.raises(AppError, match="No adapter"):
            stranger.predict(conversations=[LIKED], api_name="/train",
                             settings={"kind": "sft", "start_from": final["adapter"]})  # fmt: skip


PAIRS = "\n".join(
    json.dumps({"prompt": q, "chosen": good, "rejected": "no"})
    for q, good in [("Say hello.", "Hello there!"), ("What is 7 plus 8?", "15")]
)


def test_nobody_scores_with_anothers_reward_model(training_app):
    """/reward (and the Chat tab's scores, through the same check) with an id that is not
    one of the caller's own reward models: refused in one sentence."""
    owner = Client(training_app.url, verbose=False)
    stranger = Client(training_app.url, verbose=False)
    settings = {"kind": "reward", "max_steps": 2, "batch_size": 2, "eval_share": 0.0,
                "eval_every": 2}  # fmt: skip
    job = owner.predict(source="jsonl", jsonl=PAIRS, settings=settings, api_name="/train")
    final = wait_over(owner, job["job"])
    assert final["state"] == "finished" and final["adapter"], final
    mine = owner.predict(prompt="Hi", reply="Hello", adapter=final["adapter"], api_name="/reward")
    assert mine["adapter"] == final["adapter"]
    for adapter in (final["adapter"], "../" + final["adapter"]):
        with pytest.raises(AppError, match="No reward model") as err:
            stranger.predict(prompt="Hi", reply="Hello", adapter=adapter, api_name="/reward")
        assert one_sentence(str(err.value)) and "of yours" in str(err.value), err.value
    with pytest.raises(AppError, match="adapter") as err:
        stranger.predict(prompt="Hi", reply="Hello", adapter="x" * 5000, api_name="/reward")
    assert one_sentence(str(err.value)), err.value
