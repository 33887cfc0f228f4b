"""Hugging Face transformers backend: a model folder, a hub id or a GGUF file.

This is the backend that can do beam search and several candidates. A single
sampled or greedy reply streams token by token: ``generate()`` runs in a
worker thread and hands token ids over a queue, so the counts are exact.
torch and transformers are imported when a model is loaded, not on import.
"""

from __future__ import annotations

import importlib.util
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.backends.hf_loading import _gguf_chat_template, _load, _locate, _window
from chat.errors import ModelLoadError
from chat.prompting import TRANSCRIPT_STOPS, render_transcript
from chat.settings import MAX_CANDIDATES


class TransformersBackend:
    """A causal language model run with ``transformers`` on CPU or CUDA."""

    def __init__(
        self,
        model: str,
        gguf_file: str | None = None,
        device: str = "auto",
        n_ctx: int | None = None,
    ):
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ModelLoadError(
                f"The transformers backend needs torch and transformers ({exc}). "
                "Install them with: pip install -r requirements.txt"
            ) from None
        self._torch = torch
        self._device, dtype = _pick_device(torch, device)
        where, gguf_file, local = _locate(model, gguf_file)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if gguf_file and importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError(
                "Loading a .gguf file with transformers needs the accelerate package: "
                "pip install accelerate (or use the llama.cpp backend for GGUF files)."
            )
        self.tokenizer = _load(transformers.AutoTokenizer, model, where, local, **extra)
        self.model = _load(
            transformers.AutoModelForCausalLM, model, where, local, dtype=dtype, **extra
        )
        self.model.to(self._device).eval()

        tok = self.tokenizer
        if not tok.chat_template and gguf_file and local:
            template = _gguf_chat_template(Path(where) / gguf_file)
            if template:
                tok.chat_template = template
        self._has_template = bool(tok.chat_template)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        # GPT-2 has no pad token; pad with EOS (what generate() would do, minus the warning).
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = tok.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids, default=0)

        self.info = ModelInfo(
            model=(gguf_file or Path(where).name) if local else model,
            backend="transformers",
            device=self._device.type,
            n_ctx=_window(self.model.config, n_ctx, model),
            chat_template=self._has_template,
        )
        self.capabilities = Capabilities(
            strategies=frozenset({"greedy", "sample", "beam"}), max_candidates=MAX_CANDIDATES
        )

    # -- prompt side -------------------------------------------------------

    def render(self, messages: list[dict]) -> str:
        """Apply the model's chat template, or a plain ``User:``/``Assistant:`` transcript."""
        if self._has_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return render_transcript(messages)

    def stop_strings(self) -> list[str]:
        """Stops that keep a transcript model from writing the user's turn; none with a template."""
        return [] if self._has_template else list(TRANSCRIPT_STOPS)

    def count_tokens(self, prompt: str) -> int:
        """Number of ids ``generate`` feeds for ``prompt``."""
        return len(self._encode(prompt))

    def truncate(self, text: str, max_tokens: int) -> str:
        """Keep the first ``max_tokens`` tokens of ``text``."""
        if max_tokens <= 0:
            return ""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
        # A cut inside a multi-byte character decodes to U+FFFD; drop that half.
        return self.tokenizer.decode(ids).rstrip("\ufffd")

    def _encode(self, prompt: str) -> list[int]:
        # A rendered chat template already spells out its special tokens (BOS,
        # <|im_start|>); adding them again would double them.
        return self.tokenizer(prompt, add_special_tokens=not self._has_template)["input_ids"]

    # -- generation --------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Stream one reply, or yield each of several candidates whole once all are done."""
        torch = self._torch
        s = request.settings
        ids = torch.tensor([self._encode(request.prompt)], dtype=torch.long, device=self._device)
        abort = threading.Event()  # set when our consumer goes away
        kwargs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": request.max_new_tokens,
            "repetition_penalty": s.repetition_penalty,
            "pad_token_id": self._pad_id,
            "stopping_criteria": _cancel_criteria(cancel, abort),
        }
        n = s.num_return_sequences
        if s.strategy == "beam":
            kwargs.update(do_sample=False, num_beams=s.num_beams, early_stopping=True)
        elif s.strategy == "sample" and s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        else:
            # Greedy, or temperature 0: every candidate would be the same reply.
            kwargs.update(do_sample=False)
            n = 1
        kwargs["num_return_sequences"] = n
        if request.stop:
            kwargs.update(stop_strings=list(request.stop), tokenizer=self.tokenizer)
        torch.manual_seed(request.seed)  # seeds CUDA too; the engine runs one generation at a time

        if s.strategy != "beam" and s.num_return_sequences == 1:
            yield from self._stream(kwargs, request, cancel, abort)
            return
        try:
            with torch.inference_mode():
                out = self.model.generate(**kwargs)
        finally:
            abort.set()
        if s.num_return_sequences > n:  # temperature 0 with several candidates
            out = out.repeat(s.num_return_sequences, 1)
        for i, row in enumerate(out[:, ids.shape[1] :].tolist()):
            new = self._until_eos(row, pad=True)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            yield Delta(i, text, len(new), self._finish(new, text, request, cancel))

    def _stream(self, kwargs: dict, request: GenerationRequest, cancel, abort) -> Iterator[Delta]:
        """Run ``generate`` in a thread and yield text as its tokens arrive."""
        streamer = _TokenQueue()  # one per call: a shared streamer would mix replies
        failure: list[BaseException] = []

        def work():
            try:
                with self._torch.inference_mode():
                    self.model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # re-raised in the caller below
                failure.append(exc)
            finally:
                streamer.end()

        thread = threading.Thread(target=work, daemon=True, name="transformers-generate")
        thread.start()
        new: list[int] = []
        prefix = read = 0  # decode window: text before ``read`` has been emitted
        pending = 0  # tokens not yet accounted for in a delta
        try:
            while (chunk := streamer.queue.get()) is not None:
                new.extend(chunk)
                pending += len(chunk)
                piece, prefix, read = self._next_piece(new, prefix, read)
                if piece:
                    yield Delta(0, piece, pending)
                    pending = 0
        finally:
            abort.set()
            thread.join()
        if failure:
            raise failure[0]
        new = self._until_eos(new)
        tail = self.tokenizer.decode(new[prefix:], skip_special_tokens=True)
        tail = tail[len(self.tokenizer.decode(new[prefix:read], skip_special_tokens=True)) :]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        yield Delta(0, tail, pending, self._finish(new, text, request, cancel))

    def _next_piece(self, ids: list[int], prefix: int, read: int) -> tuple[str, int, int]:
        """Text that ``ids[read:]`` adds, decoded with a little left context.

        Decoding only the new ids would lose spaces that depend on the token
        before; decoding everything each step would be quadratic. A trailing
        U+FFFD is half of a multi-byte character: wait for the rest.
        """
        before = self.tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = self.tokenizer.decode(ids[prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            return after[len(before) :], read, len(ids)
        return "", prefix, read

    def _until_eos(self, ids: list[int], pad: bool = False) -> list[int]:
        """The ids up to and including the first EOS; what follows is padding.

        With ``pad``, a pad token also ends the row (not included): in a batch,
        a candidate that met a stop string is padded while the others go on.
        """
        for i, t in enumerate(ids):
            if t in self._eos_ids:
                return ids[: i + 1]
            if pad and t == self._pad_id:
                return ids[:i]
        return ids

    def _finish(self, ids: list[int], text: str, request: GenerationRequest, cancel) -> str:
        """Why this candidate ended: cancelled, stop (EOS or a stop string) or length."""
        if cancel.is_set():
            return "cancelled"
        if ids and ids[-1] in self._eos_ids:
            return "stop"
        if any(s in text for s in request.stop):
            return "stop"
        return "length" if len(ids) >= request.max_new_tokens else "stop"


class _TokenQueue:
    """A ``generate()`` streamer that passes new token ids to a queue.

    It has the two methods of transformers' ``BaseStreamer`` (an interface with
    no behaviour), duck-typed so that this module imports without transformers.
    ``None`` in the queue means generation ended.
    """

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        """Receive the prompt ids first (skipped), then each step's new ids."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        """Mark the end of generation."""
        self.queue.put(None)


def _cancel_criteria(*events: threading.Event):
    """Stopping criteria that end ``generate`` at the next token once any event is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stop = any(e.is_set() for e in events)
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([Cancelled()])


def _pick_device(torch, device: str):
    """Map ``auto``/``cpu``/``cuda`` to a torch device and the dtype to load in."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu"), torch.float32
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"--device {device} was asked for, but torch sees no CUDA GPU (a CPU-only "
                "torch build, or no GPU visible). Use --device cpu or --device auto."
            )
        return torch.device(device), torch.float16
    raise ModelLoadError(f"Unknown device {device!r}; choose one of: auto, cpu, cuda.")
