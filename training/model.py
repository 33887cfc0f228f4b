"""The base model to train: a folder, a hub id or a GGUF file, as plain fp32 weights.

A GGUF file is dequantized by transformers (about 25 s for the bundled 135M model on
2 cores). transformers then marks the model as quantized and the Trainer refuses it,
although its weights are ordinary fp32 tensors: ``load_base`` clears those marks.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chat.errors import ModelLoadError

log = logging.getLogger(__name__)


def load_base(model: str, gguf_file: str | None = None):
    """``(model, tokenizer)`` in fp32 on the CPU, trainable, with a chat template when the
    GGUF file carries one. Raises ``ModelLoadError`` with what to do instead."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ModelLoadError(
            f"Training needs torch and transformers ({exc}). "
            "Install them with: pip install -r requirements.txt"
        ) from None
    from chat.backends.hf_loading import _gguf_chat_template, _load, _locate

    where, gguf_file, local = _locate(model, gguf_file)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        log.info("Dequantizing %s with transformers for training...", gguf_file)
    tokenizer = _load(transformers.AutoTokenizer, model, where, local, **extra)
    net = _load(
        transformers.AutoModelForCausalLM, model, where, local, dtype=torch.float32, **extra
    )
    if gguf_file:
        unmark_quantized(net)
        if not tokenizer.chat_template and local:
            template = _gguf_chat_template(Path(where) / gguf_file)
            if template:
                tokenizer.chat_template = template
    if tokenizer.pad_token_id is None:  # GPT-2 and friends: pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
    return net, tokenizer


def unmark_quantized(net) -> None:
    """Clear the "quantized" marks transformers leaves on a model dequantized from GGUF.

    Its weights are plain fp32 after loading; the marks only make the Trainer and peft
    treat it as a k-bit model they must not train.
    """
    net.hf_quantizer = None
    net.is_quantized = False
    if hasattr(net.config, "quantization_config"):
        del net.config.quantization_config
    net.quantization_method = None
