"""Tiny randomly initialised models and an offline tokenizer, built in the test (seconds).

``tiny_llama()`` is Llama-style (no biases), ``tiny_gpt2()`` GPT-2-style (biases everywhere).
Both share a byte-level BPE tokenizer trained on the spot on a small corpus, with a ChatML
chat template like the bundled model's.
"""

from __future__ import annotations

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is 7 plus 8? 7 + 8 = 15. What is the capital of France? Paris.",
    "The quick brown fox jumps over the lazy dog. Hello there, how are you today?",
    "user assistant system red green blue yes no good bad polite rude answer question",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]


def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 400):
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, ChatML template), trained offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS + list(corpus or []), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama(tokenizer=None, seed: int = 0):
    """``(model, tokenizer)``: a 2-layer Llama-style model of width 32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # outputs far from uniform: every method has a signal to scale
    )
    return LlamaForCausalLM(config).float(), tokenizer


def tiny_gpt2(tokenizer=None, seed: int = 0):
    """``(model, tokenizer)``: a 2-layer GPT-2-style model of width 32 (with biases)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,
    )
    return GPT2LMHeadModel(config).float(), tokenizer


def save_tiny(kind: str, path) -> str:
    """Save a tiny model (``llama`` or ``gpt2``) and its tokenizer to ``path``; its folder."""
    model, tok = (tiny_llama if kind == "llama" else tiny_gpt2)()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
