"""The "which PEFT method" table: every method on the same data, and what the figures say."""

from __future__ import annotations

from tests.helpers.tiny_models import tiny_llama
from training.compare import compare_methods, compare_summary
from training.data import build_dataset
from training.settings import TrainSettings

ROWS = [{"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"}
        for i in range(6)]  # fmt: skip


def test_every_method_runs_on_the_same_data_and_bitfit_says_why_not_on_llama():
    model, tok = tiny_llama()
    settings = TrainSettings(batch_size=2, eval_share=0.3)
    data = build_dataset(ROWS, "sft", settings, tok)
    events = []
    rows = compare_methods((model, tok), data, 3, settings, report=events.append)
    assert [r["method"] for r in rows] == ["lora", "ia3", "prefix", "prompt", "ln", "bitfit"]
    for r in rows[:5]:
        assert 0 < r["trainable"] and 0 < r["share"] < 0.5, r
        assert r["adapter_bytes"] > 0 and r["s_per_step"] > 0 and r["peak_mib"] is not None
        assert r["train_loss"] > 0 and r["eval_loss"] > 0 and not r["note"]
    assert rows[5]["trainable"] is None and "LN tuning" in rows[5]["note"]
    # LoRA on every linear layer trains more than IA3's vectors and stores more.
    lora, ia3 = rows[0], rows[1]
    assert lora["trainable"] > ia3["trainable"] and lora["adapter_bytes"] > ia3["adapter_bytes"]
    assert len([e for e in events if e["event"] == "compare_row"]) == 6
    assert "bitfit: BitFit trains the bias terms" in compare_summary(rows)


def _row(method, share, seconds, size):
    return {"method": method, "trainable": 1, "share": share, "adapter_bytes": size,
            "s_per_step": seconds, "peak_mib": 10.0, "train_loss": 1.0, "eval_loss": 1.0,
            "note": ""}  # fmt: skip


def test_the_summary_says_time_is_not_saved_only_when_the_figures_show_it():
    same_time = [_row("lora", 0.018, 2.7, 9_800_000), _row("ia3", 0.0002, 2.5, 120_000)]
    text = compare_summary(same_time)
    assert "save memory and storage, not time" in text
    assert "117.2 KB (ia3) to 9.3 MB (lora)" in text
    faster = [_row("lora", 0.018, 2.7, 9_800_000), _row("ia3", 0.0002, 0.9, 120_000)]
    text = compare_summary(faster)
    assert "not time" not in text and "Fastest: ia3 (0.90 s/step)" in text
