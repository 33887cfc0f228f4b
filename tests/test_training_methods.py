"""Each parameter-efficient method trains (its loss falls) and its adapter saves and loads.

Tiny randomly initialised models made in the test: Llama-style (no biases) and GPT-2-style.
"""

from __future__ import annotations

import os

import pytest

from tests.helpers.tiny_models import tiny_gpt2, tiny_llama
from training.adapters import list_adapters, load_adapter, recover, save_adapter
from training.data import build_dataset
from training.errors import TrainingError
from training.methods import apply_method, trainable_counts
from training.run import train
from training.settings import MethodSettings, TrainSettings

ROWS = [
    {"prompt": "What is 7 plus 8?", "completion": "7 + 8 = 15"},
    {"prompt": "Say hello.", "completion": "Hello there, how are you today?"},
]
# Learning rates that memorise two rows in 20 steps on the tiny models.
LR = {"lora": 1e-2, "ia3": 1e-1, "prefix": 3e-2, "prompt": 1e-1, "ln": 5e-2, "bitfit": 3e-2}


def _settings(method, **kw):
    base = dict(learning_rate=LR[method], method=MethodSettings(method=method), max_steps=20,
                batch_size=2, eval_share=0, eval_every=100)  # fmt: skip
    return TrainSettings(**{**base, **kw})


def _loss(model, features) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        f = features[0]
        out = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]))
    return float(out.loss)


@pytest.mark.parametrize("method", ["lora", "ia3", "prefix", "prompt", "ln", "bitfit"])
def test_each_method_learns_a_memorisable_dataset_and_its_adapter_loads(method, tmp_path):
    make = tiny_gpt2 if method == "bitfit" else tiny_llama
    model, tok = make()
    settings = _settings(method)
    data = build_dataset(ROWS, "sft", settings, tok)
    events = []
    result = train(model, tok, data, settings, tmp_path, adapter_id="a1", report=events.append)
    losses = [loss for _, loss in result.train_loss]
    assert result.state == "finished" and result.steps == 20 and len(losses) == 20
    assert losses[-1] < 0.9 * losses[0]
    assert 0 < result.trainable < result.total_params
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 21))

    (meta,) = list_adapters(tmp_path)
    assert (meta["id"], meta["method"], meta["kind"], meta["steps"]) == ("a1", method, "sft", 20)
    assert meta["size_bytes"] > 0 and meta["train_loss"] == result.train_loss
    fresh, _ = make()
    before = _loss(fresh, data.train_features)
    tuned = load_adapter(make()[0], tmp_path / "a1")
    assert _loss(tuned, data.train_features) < before


def test_bitfit_trains_only_the_biases_and_refuses_a_model_without_them(tmp_path):
    model, tok = tiny_gpt2()
    reference, _ = tiny_gpt2()
    settings = _settings("bitfit", max_steps=5)
    train(model, tok, build_dataset(ROWS, "sft", settings, tok), settings, tmp_path,
          adapter_id="b1")  # fmt: skip
    old = dict(reference.named_parameters())
    changed = {n for n, p in model.named_parameters() if not p.detach().equal(old[n].detach())}
    assert changed and all(n.endswith(".bias") for n in changed)

    llama, _ = tiny_llama()
    with pytest.raises(TrainingError, match="has none.*LN tuning"):
        apply_method(llama, MethodSettings(method="bitfit"))


def test_lora_trains_a_small_share_of_the_parameters():
    model, _ = tiny_llama()
    total = sum(p.numel() for p in model.parameters())
    net = apply_method(model, MethodSettings(method="lora", lora_r=2, target_modules=["q_proj"]))
    trainable, counted = trainable_counts(net)
    # 2 layers x (A: 32x2 + B: 2x32) on q_proj alone.
    assert (trainable, counted) == (2 * (32 * 2 + 2 * 32), total + trainable)


def test_a_save_that_dies_half_way_leaves_the_last_checkpoint(tmp_path):
    model, tok = tiny_llama()
    net = apply_method(model, MethodSettings(method="lora"))
    save_adapter(net, tok, tmp_path, "a1", {"id": "a1", "steps": 10})

    def broken(folder, **kw):
        (tmp_path / "half").mkdir()
        open(f"{folder}/adapter_model.safetensors", "wb").write(b"\0" * 10)
        raise OSError("disk full")

    net.save_pretrained = broken
    with pytest.raises(OSError):
        save_adapter(net, tok, tmp_path, "a1", {"id": "a1", "steps": 20})
    (meta,) = list_adapters(tmp_path)
    assert meta["steps"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1", "half"]  # no temporary folder
    load_adapter(tiny_llama()[0], tmp_path / "a1")


def test_an_adapter_set_aside_by_a_dead_save_still_lists_and_recover_restores_it(tmp_path):
    model, tok = tiny_llama()
    net = apply_method(model, MethodSettings(method="lora"))
    save_adapter(net, tok, tmp_path, "a1", {"id": "a1", "steps": 10})
    os.replace(tmp_path / "a1", tmp_path / ".old-a1")  # died between the two renames
    (tmp_path / ".tmp-a1-live").mkdir()  # a save in progress: listing leaves it alone
    (meta,) = list_adapters(tmp_path)
    assert meta["steps"] == 10 and (tmp_path / ".tmp-a1-live").is_dir()
    recover(tmp_path)  # once no save runs
    assert [p.name for p in tmp_path.iterdir()] == ["a1"]
    load_adapter(tiny_llama()[0], tmp_path / "a1")


def test_the_time_limit_ends_a_run_after_the_step_in_progress(tmp_path):
    model, tok = tiny_llama()
    settings = _settings("lora", max_steps=50)
    data = build_dataset(ROWS, "sft", settings, tok)
    result = train(model, tok, data, settings, tmp_path, adapter_id="t1", max_seconds=0)
    assert (result.state, result.steps) == ("stopped", 1) and "time limit" in result.message
    (meta,) = list_adapters(tmp_path)
    assert (meta["state"], meta["steps"]) == ("stopped", 1)
