"""The recipe's later steps on tiny models: a reward model ranks chosen over rejected, and DPO's
preference accuracy rises on a separable pair set (also from an SFT adapter)."""

from __future__ import annotations

from tests.helpers.tiny_models import tiny_llama
from training.adapters import list_adapters, load_adapter
from training.data import build_dataset
from training.reward import RewardScorer, pairwise_accuracy
from training.run import start_model, train
from training.settings import TrainSettings

WORDS = ["red", "green", "blue", "fox", "dog", "today", "question", "answer"]
PAIRS = [{"prompt": f"Tell me about the {w}.", "chosen": f"Yes, good and polite: the {w}.",
          "rejected": f"No. Bad, rude {w}!"} for w in WORDS]  # fmt: skip


def _settings(kind, **kw):
    return TrainSettings(kind=kind, learning_rate=1e-2, max_steps=10, batch_size=4,
                         eval_share=0.25, eval_every=5, **kw)  # fmt: skip


def test_the_reward_model_ranks_chosen_over_rejected(tmp_path):
    model, tok = tiny_llama()
    settings = _settings("reward")
    data = build_dataset(PAIRS, "reward", settings, tok)
    result = train(model, tok, data, settings, tmp_path, adapter_id="r1")
    assert result.metrics[0]["accuracy"] < 1.0  # the untrained head ranks by chance
    scorer = RewardScorer.load(tmp_path / "r1", base_model=tiny_llama()[0])
    assert pairwise_accuracy(scorer, data.train) == 1.0
    p = data.train[0]
    best, scores = scorer.best_of(p["prompt"], [p["rejected"], p["chosen"]])
    assert best == 1 and scores[1] - scores[0] > 1.0
    (meta,) = list_adapters(tmp_path)
    assert meta["kind"] == "reward" and meta["held_out_accuracy"] is not None


def test_dpo_preference_accuracy_rises_from_an_sft_adapter(tmp_path):
    model, tok = tiny_llama()
    sft = TrainSettings(learning_rate=1e-2, max_steps=3, batch_size=4, eval_share=0)
    rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    train(model, tok, build_dataset(rows, "sft", sft, tok), sft, tmp_path, adapter_id="s1")

    settings = _settings("dpo", start_from="s1", beta=0.1)
    data = build_dataset(PAIRS, "dpo", settings, tok)
    base = start_model(tiny_llama()[0], tmp_path, "s1")
    result = train(base, tok, data, settings, tmp_path, adapter_id="d1")
    train_steps = [m for m in result.metrics if "rewards/accuracies" in m]
    assert train_steps[0]["rewards/accuracies"] == 0.0  # policy == reference at the start
    assert train_steps[-1]["rewards/accuracies"] == 1.0
    assert train_steps[-1]["rewards/margins"] > train_steps[1]["rewards/margins"] > 0
    held = [m for m in result.metrics if "eval_rewards/accuracies" in m]
    assert [m["step"] for m in held] == [5, 10]
    # The DPO adapter loads on the base with its SFT adapter merged first.
    net = load_adapter(tiny_llama()[0], tmp_path / "d1")
    assert net.peft_config["default"].peft_type == "LORA"
