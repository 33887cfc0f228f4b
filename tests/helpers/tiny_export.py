"""A tiny Llama-style model and a LoRA adapter trained on it, made in the test (seconds).

Self-contained on purpose (the export and before/after tests need nothing else):
a byte-level BPE tokenizer trained on the spot with a ChatML template, a 2-layer
random Llama saved with ``save_pretrained``, and a LoRA trained with a plain
AdamW loop on one prompt/answer pair, saved by peft beside an ``adapter_meta.json``
as the app's training jobs write it.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "What is 7 plus 8? 7 + 8 = 15. What is the capital of France? Paris.",
    "The quick brown fox jumps over the lazy dog. Hello there, how are you today?",
    "user assistant system red green blue yes no good bad answer question",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]
PROMPT = [{"role": "user", "content": "What is 7 plus 8?"}]
ANSWER = "7 + 8 = 15"


def tiny_tokenizer():
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, ChatML template), trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama_dir(folder: Path, seed: int = 0) -> Path:
    """Save a random 2-layer Llama (4 heads, 2 KV heads, width 32) and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def train_lora(
    net, tok, prompt=PROMPT, answer=ANSWER, steps: int = 80, lr: float = 2e-2, seed: int = 0
):
    """A peft LoRA (r=4, every linear layer) fitted to one prompt/answer pair; returns it."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(net, config)
    text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    p_ids = tok(text, add_special_tokens=False)["input_ids"]
    a_ids = tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"]
    x = torch.tensor([p_ids + a_ids])
    labels = x.clone()
    labels[0, : len(p_ids)] = -100  # loss on the answer only
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(input_ids=x, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def save_adapter(model, folder: Path, base_model: str, name: str = "tiny") -> Path:
    """``save_pretrained`` plus the app's ``adapter_meta.json``."""
    model.save_pretrained(folder)
    meta = {"id": folder.name, "name": name, "kind": "sft", "method": "lora",
            "base_model": base_model, "steps": 0, "owner": ""}  # fmt: skip
    (folder / "adapter_meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def tiny_adapter(root: Path, steps: int = 80) -> tuple[Path, Path]:
    """``(base folder, adapter folder)``: a tiny Llama and a LoRA trained on PROMPT -> ANSWER."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_llama_dir(root / "base")
    net = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    model = train_lora(net, tok, steps=steps)
    return base, save_adapter(model, root / "adapters" / "a1", str(base))


def greedy(net, tok, prompt=PROMPT, n: int = 12) -> str:
    """The greedy reply of ``net`` to ``prompt`` (chat template applied), special tokens dropped."""
    import torch

    text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = net.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
            pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
