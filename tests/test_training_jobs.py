"""Training jobs run in a child process: progress streams back, Stop keeps a loadable adapter,
one job at a time."""

from __future__ import annotations

import time

import pytest

from tests.helpers.tiny_models import save_tiny, tiny_tokenizer
from training.adapters import list_adapters, load_adapter
from training.data import build_dataset
from training.errors import TrainingBusy
from training.jobs import JobSpec, TrainJobs
from training.settings import TrainSettings

ROWS = [{"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"}
        for i in range(8)]  # fmt: skip


@pytest.fixture
def jobs(tmp_path):
    j = TrainJobs(tmp_path / "jobs")
    yield j
    j.close()


def _spec(tmp_path, **settings):
    folder = save_tiny("llama", tmp_path / "base")
    s = TrainSettings(learning_rate=1e-2, batch_size=2, eval_share=0.25, **settings)
    return JobSpec(model=folder, data=build_dataset(ROWS, "sft", s, tiny_tokenizer()),
                   settings=s, out_dir=tmp_path / "adapters", max_seconds=300, name="sums",
                   owner="alice")  # fmt: skip


def test_a_job_reports_progress_and_finishes(jobs, tmp_path):
    job = jobs.start(_spec(tmp_path, max_steps=6, eval_every=3))
    s = jobs.wait(job, timeout=240)
    assert s["state"] == "finished", s["message"]
    assert (s["step"], s["total_steps"]) == (6, 6)
    assert [step for step, _ in s["train_loss"]] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in s["eval_loss"]] == [3, 6]
    assert s["trainable"] > 0 and s["remaining_s"] == 0
    (meta,) = list_adapters(tmp_path / "adapters", owner="alice")
    assert meta["id"] == s["adapter"] and meta["state"] == "finished" and meta["steps"] == 6
    assert meta["eval_loss"] == s["eval_loss"] and meta["name"] == "sums"
    assert list_adapters(tmp_path / "adapters", owner="bob") == []


def test_stop_keeps_the_last_checkpoint_and_it_loads(jobs, tmp_path):
    spec = _spec(tmp_path, max_steps=2000, eval_every=2)
    job = jobs.start(spec)
    with pytest.raises(TrainingBusy):
        jobs.start(spec)
    deadline = time.monotonic() + 240
    while jobs.status(job)["step"] < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs.status(job)["state"] == "running"
    jobs.stop(job)
    s = jobs.wait(job, timeout=120)
    assert s["state"] == "stopped", s["message"]
    assert 4 <= s["step"] < 2000 and s["adapter"]
    (meta,) = list_adapters(tmp_path / "adapters")
    assert meta["state"] == "stopped" and meta["steps"] == s["step"]
    net = load_adapter(spec.model, tmp_path / "adapters" / s["adapter"])
    assert net.peft_config["default"].peft_type == "LORA"
    jobs.start(_spec(tmp_path, max_steps=1))  # the app is free again
