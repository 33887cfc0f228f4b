"""The bundled model, trained for real: the GGUF LoRA round trip, chatting with the adapter,
and before/after.

A LoRA trained for 15 steps on one chat-templated prompt changes SmolLM2's greedy
answer; exported as a GGUF adapter and loaded by llama-cpp-python on top of the
original Q4_1 GGUF, it gives the same greedy reply as the adapter in transformers.
The same adapter folder then loads in the chat's transformers backend.
"""

from __future__ import annotations

import numpy as np
import pytest

from chat.models import default_model_path
from training.export import export_gguf_lora

pytestmark = [pytest.mark.slow, pytest.mark.model]
PROMPT = [{"role": "user", "content": "What is 7 plus 8?"}]
ANSWER = "7 + 8 = 15"


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """Train a LoRA on the bundled model with a plain AdamW loop; save it; keep what the
    transformers side saw (greedy replies, logits) for the comparisons."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.model import load_base

    torch.manual_seed(0)
    net, tok = load_base(str(default_model_path()))
    text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
    answer_ids = tok(ANSWER + tok.eos_token, add_special_tokens=False)["input_ids"]

    def greedy(model) -> list[int]:
        x = torch.tensor([prompt_ids])
        with torch.inference_mode():
            out = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False,
                pad_token_id=tok.pad_token_id,
            )  # fmt: skip
        return out[0, len(prompt_ids) :].tolist()

    before = tok.decode(greedy(net), skip_special_tokens=True)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(net, config)
    x = torch.tensor([prompt_ids + answer_ids])
    labels = x.clone()
    labels[0, : len(prompt_ids)] = -100  # loss on the answer only
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    for _ in range(15):
        model(input_ids=x, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    tuned_ids = greedy(model)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(folder)
    seen = prompt_ids + tuned_ids
    with torch.inference_mode():
        rows = model(input_ids=torch.tensor([seen])).logits[0].float().numpy()
    return {
        "folder": folder, "before": before, "prompt_ids": prompt_ids, "seen": seen,
        "tuned": tok.decode(tuned_ids, skip_special_tokens=True), "rows": rows,
    }  # fmt: skip


def test_training_changed_the_greedy_answer(lora):
    assert lora["before"] != ANSWER and lora["tuned"] == ANSWER, lora


def test_gguf_lora_in_llama_cpp_matches_the_adapter_in_transformers(lora, tmp_path):
    from llama_cpp import Llama

    gguf = default_model_path()
    adapter = export_gguf_lora(lora["folder"], gguf, tmp_path / "adapter.gguf")
    llm = Llama(
        model_path=str(gguf), lora_path=str(adapter), n_ctx=512, n_threads=1, logits_all=True,
        verbose=False,
    )  # fmt: skip
    try:
        # The same chat-templated ids on both sides, so only the weights can differ.
        out = llm.create_completion(lora["prompt_ids"], max_tokens=24, temperature=0.0)
        assert out["choices"][0]["text"] == lora["tuned"] == ANSWER
        llm.reset()
        llm.eval(lora["seen"])
        cpp_rows = np.array(llm.scores[: len(lora["seen"])])
    finally:
        llm.close()
    # Beyond the greedy reply, the whole distributions agree at every prompt position (the
    # adapter acts there too), up to Q4_1 rounding: measured KL about 0.016 nats, against
    # 0.18 when the q/k rows of B are not permuted for llama.cpp.
    p_hf, p_cpp = _log_softmax(lora["rows"]), _log_softmax(cpp_rows)
    kl = (np.exp(p_hf) * (p_hf - p_cpp)).sum(-1)[: len(lora["prompt_ids"])]
    assert kl.mean() < 0.06, kl.mean()


def test_chatting_with_the_adapter_and_before_after(lora, smol_transformers):
    from chat.backends.transformers_backend import TransformersBackend
    from training.before_after import changed_tokens, compare_replies

    gguf = default_model_path()
    tuned = TransformersBackend(
        str(gguf.parent), gguf_file=gguf.name, device="cpu", adapter=str(lora["folder"])
    )
    assert tuned.info.model == f"{gguf.name} + adapter adapter"
    greedy = {"strategy": "greedy", "max_new_tokens": 24}
    [row] = compare_replies(smol_transformers, tuned, [PROMPT], greedy)
    assert row["tuned"] == ANSWER and row["base"] != ANSWER  # the app's default settings
    moved = changed_tokens(smol_transformers, tuned, PROMPT, ANSWER, k=3)["most_changed"]
    assert moved[0]["tuned"] > 0.9 > moved[0]["base"]
