"""The bundled model learns: a few LoRA SFT steps change its greedy answer to a trained prompt."""

from __future__ import annotations

import pytest

from training.adapters import load_adapter
from training.data import build_dataset
from training.run import train
from training.settings import TrainSettings

pytestmark = [pytest.mark.slow, pytest.mark.model]
PAIRS = [(7, 8), (2, 3), (4, 5), (6, 1), (9, 9), (3, 8), (5, 7), (12, 4)]


def _answer(net, tok, question: str) -> str:
    import torch

    ids = tok.apply_chat_template([{"role": "user", "content": question}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)  # fmt: skip
    with torch.no_grad():
        out = net.generate(**ids, max_new_tokens=16, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def test_lora_sft_steps_change_the_greedy_answer_to_a_trained_prompt(tmp_path):
    from chat.models import default_model_path
    from training.model import load_base

    gguf = str(default_model_path())
    model, tok = load_base(gguf)
    before = _answer(model, tok, "What is 7 plus 8?")
    assert before != "7 + 8 = 15"
    rows = [{"prompt": f"What is {a} plus {b}?", "completion": f"{a} + {b} = {a + b}"}
            for a, b in PAIRS]  # fmt: skip
    settings = TrainSettings(max_steps=15, batch_size=4, eval_share=0, eval_every=100)
    result = train(model, tok, build_dataset(rows, "sft", settings, tok), settings, tmp_path,
                   adapter_id="sums", base_model=gguf)  # fmt: skip
    assert result.train_loss[-1][1] < result.train_loss[0][1]
    # The saved adapter, on a freshly loaded base, answers in the trained format.
    tuned = load_adapter(gguf, tmp_path / "sums")
    assert _answer(tuned, tok, "What is 7 plus 8?") == "7 + 8 = 15"
