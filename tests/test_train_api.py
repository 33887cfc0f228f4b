"""The training API through ``gradio_client`` on a real app whose base model is a tiny Llama-style
folder made here, so each job trains in seconds: /train, /train_status, /train_stop, /adapters."""

from __future__ import annotations

import json
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import start_studio
from tests.helpers.examples import PREFERENCE_JSONL as PAIRS
from tests.helpers.tiny_models import save_tiny

# A real app training a tiny model in a child process: seconds per test, outside the
# one-minute tier.
pytestmark = pytest.mark.slow

LIKED = [
    {"role": "user", "content": "What is 7 plus 8?"},
    {"role": "assistant", "content": "7 + 8 = 15", "feedback": "like"},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris.", "feedback": "like"},
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello there!", "feedback": "like"},
    {"role": "user", "content": "Is the fox quick?"},
    {"role": "assistant", "content": "Yes, the quick brown fox.", "feedback": "dislike"},
]


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    from chat.backends.transformers_backend import TransformersBackend

    root = tmp_path_factory.mktemp("train-api")
    tiny = save_tiny("llama", root / "tiny")
    studio = start_studio(TransformersBackend(tiny, device="cpu"), root / "data", model=tiny)
    yield studio
    studio.close()


@pytest.fixture(scope="module")
def client(tiny_app):
    return Client(tiny_app.demo.local_url, verbose=False)


def follow(client, job, until=lambda s: s["state"] not in ("starting", "running"), timeout=300):
    """Poll /train_status until ``until(status)``; every status seen."""
    seen, deadline = [], time.time() + timeout
    while time.time() < deadline:
        seen.append(client.predict(job=job, api_name="/train_status"))
        if until(seen[-1]):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"the job did not get there: {seen[-1]}")


def test_a_job_from_liked_replies_trains_reports_losses_and_saves_its_adapter(client):
    settings = {"max_steps": 6, "batch_size": 2, "eval_every": 2, "eval_share": 0.34,
                "method": {"method": "lora", "lora_r": 4}}  # fmt: skip
    out = client.predict(conversations=[LIKED], settings=settings, name="arith",
                         api_name="/train")  # fmt: skip
    # Three liked replies (the disliked one is no SFT row): two to train on, one held out.
    assert out["counts"]["loaded"] == 3 and out["counts"]["eval"] == 1, out
    seen = follow(client, out["job"])
    final = seen[-1]
    assert final["state"] == "finished", final
    steps = [s for s, _ in final["train_loss"]]
    assert steps == sorted(steps) and steps[-1] == final["step"] == 6
    assert final["eval_loss"] and final["adapter"]
    listed = client.predict(api_name="/adapters")
    mine = next(a for a in listed if a["id"] == final["adapter"])
    assert mine["name"] == "arith" and mine["kind"] == "sft" and mine["method"] == "lora"
    # Neither a server path nor the owner's key leaves the app.
    assert mine["size_bytes"] > 0 and "path" not in mine and "owner" not in mine
    assert "owner" not in final


def test_stop_keeps_the_last_finished_checkpoint(client):
    rows = "\n".join(
        json.dumps({"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"})
        for i in range(12)
    )
    settings = {"max_steps": 2000, "batch_size": 1, "eval_every": 2, "eval_share": 0.0}
    job = client.predict(source="jsonl", jsonl=rows, settings=settings, api_name="/train")["job"]
    follow(client, job, until=lambda s: s["step"] >= 3)
    client.predict(job=job, api_name="/train_stop")
    final = follow(client, job)[-1]
    assert final["state"] == "stopped" and final["adapter"], final
    assert final["adapter"] in [a["id"] for a in client.predict(api_name="/adapters")]


def test_no_reward_model_yet_is_one_sentence(client):
    with pytest.raises(AppError, match="No reward model of yours"):
        client.predict(prompt="Hi", reply="Hello", api_name="/reward")




def test_a_reward_model_scores_replies_and_ranks_candidates(client, tiny_app):
    settings = {"kind": "reward", "max_steps": 30, "batch_size": 4, "eval_share": 0.0,
                "eval_every": 30, "learning_rate": 0.01}  # fmt: skip
    job = client.predict(source="jsonl", jsonl=PAIRS, settings=settings, api_name="/train")["job"]
    final = follow(client, job)[-1]
    assert final["state"] == "finished" and final["adapter"], final
    good = client.predict(prompt="Say hello.", reply="Hello there!", api_name="/reward")
    bad = client.predict(prompt="Say hello.", reply="no", api_name="/reward")
    assert good["adapter"] == bad["adapter"] == final["adapter"]
    assert good["score"] > bad["score"]  # it learnt the training pairs' preference
    caller = tiny_app.access.caller(None)
    ranked = tiny_app.ui.training.rank(caller, "Say hello.", ["no", "Hello there!"])
    assert ranked["order"] == [1, 0] and ranked["adapter"] == final["adapter"]
    chat = [{"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "no",
             "meta": {"candidates": ["no", "Hello there!"], "chosen": 0}}]  # fmt: skip
    scored = tiny_app.ui.training.score_chat(caller, chat)
    assert scored[0]["score"] == bad["score"]  # the reply shown, scored as /reward scores it
    assert [c["text"] for c in scored[0]["candidates"]] == ["Hello there!", "no"]  # best of n


def test_export_gives_the_peft_folder_and_refuses_gguf_on_a_folder_base(client, tiny_app):
    import zipfile

    training = tiny_app.ui.training
    caller = tiny_app.access.caller(None)
    job = client.predict(conversations=[LIKED], settings={"max_steps": 2}, api_name="/train")
    sft = {"id": follow(client, job["job"])[-1]["adapter"]}
    path = training.export(caller, sft["id"], "peft")
    names = zipfile.ZipFile(path).namelist()
    assert "adapter_config.json" in names and "adapter_meta.json" in names
    with pytest.raises(Exception, match="GGUF base model"):
        training.export(caller, sft["id"], "gguf")
    with pytest.raises(Exception, match="No adapter"):
        training.export(caller, "not-mine", "peft")
