"""Hugging Face transformers backend: a model folder, a hub id or a GGUF file.

This is the backend that can do beam search and several candidates. A single
sampled or greedy reply streams token by token: ``generate()`` runs in a
worker thread and hands token ids over a queue, so the counts are exact.
torch and transformers are imported when a model is loaded, not on import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from chat.backends import hf_adapter, hf_inspect
from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.backends.hf_loading import _gguf_chat_template, _load, _locate, _window
from chat.backends.threads import ThreadTuner
from chat.errors import ModelLoadError
from chat.probs import TRANSFORMERS_ORDER
from chat.prompting import TRANSCRIPT_STOPS, render_transcript
from chat.settings import MAX_CANDIDATES

log = logging.getLogger("chat_studio")


class TransformersBackend:
    """A causal language model run with ``transformers`` on CPU or CUDA."""

    sampler_order = TRANSFORMERS_ORDER
    penalty_last_n = None  # transformers penalises every token seen, prompt included

    def __init__(
        self,
        model: str,
        gguf_file: str | None = None,
        device: str = "auto",
        n_ctx: int | None = None,
        adapter: str | None = None,
        merge_adapter: bool = True,
    ):
        """``adapter``: a trained adapter folder to chat with, merged into the weights
        (``merge_adapter``) or applied by peft's layers around them."""
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
        # On the CPU, torch's thread count follows the machine's load, as llama.cpp's does.
        on_cpu = self._device.type == "cpu"
        self.tuner = ThreadTuner(max_threads=torch.get_num_threads()) if on_cpu else None
        where, gguf_file, local = _locate(model, gguf_file)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if gguf_file and importlib.util.find_spec("accelerate") is None:
            raise ModelLoadError(
                "Loading a .gguf file with transformers needs the accelerate package: "
                "pip install accelerate (or use the llama.cpp backend for GGUF files)."
            )
        t0 = time.perf_counter()
        if gguf_file:
            log.info("Dequantizing %s with transformers (this takes a while)...", gguf_file)
        self.tokenizer = _load(transformers.AutoTokenizer, model, where, local, **extra)
        self.model = _load(
            transformers.AutoModelForCausalLM, model, where, local, dtype=dtype, **extra
        )
        log.info(
            "Loaded %s with transformers in %.1f s", gguf_file or model, time.perf_counter() - t0
        )
        if adapter:
            self.model = hf_adapter.apply_adapter(self.model, adapter, merge=merge_adapter)
            # the prompt format the adapter was trained on, when it saved its tokenizer
            self.tokenizer = hf_adapter.adapter_tokenizer(adapter) or self.tokenizer
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

        name = (gguf_file or Path(where).name) if local else model
        if adapter:
            name = f"{name} + adapter {hf_adapter.adapter_name(Path(adapter))}"
        self.info = ModelInfo(
            model=name,
            backend="transformers",
            device=self._device.type,
            n_ctx=_window(self.model.config, n_ctx, model),
            chat_template=self._has_template,
            # Ids both the tokenizer and the embedding table know (a padded table is larger).
            n_vocab=min(len(tok), getattr(self.model.config, "vocab_size", None) or len(tok)),
        )
        self.capabilities = Capabilities(
            strategies=frozenset({"greedy", "sample", "beam"}),
            max_candidates=MAX_CANDIDATES,
            logprobs=True,
            sampler_probs=True,
            force_prefix=True,
            next_token=True,
            scoring=True,
            attention=True,
            internals=True,
        )

    def close(self) -> None:
        """Drop the model and hand its memory back at once (the GPU's cache too)."""
        import gc

        if self.model is None:
            return
        self.model = None
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

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

    # -- inspection ---------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids: a rendered prompt as ``generate`` reads it, or plain text."""
        if special:
            return self._encode(text)
        return self.tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]

    def piece(self, token_id: int) -> str:
        """How one token reads (special tokens spelled out)."""
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def next_logits(self, ids: list[int]):
        """Raw logits for the position after ``ids``."""
        return hf_inspect.next_logits(self.model, self._torch, ids, self._device)

    def score(self, ids: list[int], first: int = 1):
        """Log-probability and entropy of each token from position ``first`` on."""
        return hf_inspect.score(self.model, self._torch, ids, first, self._device)

    def attention(self, ids: list[int], layer: int):
        """Attention weights (heads x n x n) of ``layer``, and the number of layers."""
        return hf_inspect.attention(self.model, self._torch, ids, layer, self._device)

    def internals(self):
        """``(model, torch, device)``: the explain views hook into the model itself."""
        return self.model, self._torch, self._device

    # -- generation --------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Stream one reply, or yield each of several candidates whole once all are done.

        ``top_logprobs`` attaches each token's probability and alternatives;
        ``forced`` tokens start the reply (each reported like a generated one).
        """
        torch = self._torch
        s = request.settings
        prompt_ids = self._encode(request.prompt)
        forced = list(request.forced)
        ids = torch.tensor([prompt_ids + forced], dtype=torch.long, device=self._device)
        abort = threading.Event()  # set when our consumer goes away
        kwargs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": max(1, request.max_new_tokens - len(forced)),
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
        forced_deltas = list(self._forced(prompt_ids, forced, request)) if forced else []

        if s.strategy != "beam" and s.num_return_sequences == 1:
            yield from forced_deltas
            yield from self._stream(kwargs, request, cancel, abort, prompt_ids + forced)
            return
        recording = request.top_logprobs > 0
        if recording:
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        try:
            with torch.inference_mode():
                out = self.model.generate(**kwargs)
        finally:
            abort.set()
        sequences = out.sequences if recording else out
        if s.num_return_sequences > n:  # temperature 0 with several candidates
            sequences = sequences.repeat(s.num_return_sequences, 1)
        rows = [self._until_eos(r, pad=True) for r in sequences[:, ids.shape[1] :].tolist()]
        infos = (
            hf_inspect.candidate_infos(self, out, ids.shape[1], request, rows[:n])
            if recording
            else None
        )
        for i, new in enumerate(rows):
            text = self.tokenizer.decode(forced + new, skip_special_tokens=True)
            finish = self._finish(new, text, request, cancel)
            if not recording:
                yield Delta(i, text, len(forced) + len(new), finish)
                continue
            for d in forced_deltas:
                yield Delta(i, d.text, d.tokens, token=d.token)
            for info in infos[min(i, n - 1)]:
                yield Delta(i, info.text, 1, token=info)
            yield Delta(i, "", 0, finish)

    def _forced(self, prompt_ids: list[int], forced: list[int], request) -> Iterator[Delta]:
        """Deltas for the forced tokens, scored in one forward pass over prompt + forced."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.tensor([prompt_ids + forced], dtype=torch.long, device=self._device)
            logits = self.model(input_ids=x).logits[0, len(prompt_ids) - 1 : -1]
            logits = logits.float().cpu().numpy()
        pieces = hf_inspect.pieces_of(self.tokenizer, forced)
        seen = list(prompt_ids)
        probe = dataclasses.replace(request, top_logprobs=max(request.top_logprobs, 1))
        for row, token, piece in zip(logits, forced, pieces, strict=True):
            info = hf_inspect.info_for(self, row, token, piece, probe, seen)
            seen.append(token)
            yield Delta(0, piece, 1, token=info)

    def _stream(
        self, kwargs: dict, request: GenerationRequest, cancel, abort, context: list[int]
    ) -> Iterator[Delta]:
        """Run ``generate`` in a thread and yield text as its tokens arrive."""
        # one per call: a shared streamer would mix replies
        streamer = _TokenQueue(self.tuner, self._torch)
        tap = hf_inspect.LogitsTap(self.model) if request.top_logprobs else None
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
        seen = list(context)
        prefix = read = 0  # decode window: text before ``read`` has been emitted
        pending = 0  # tokens not yet accounted for in a delta
        try:
            while (chunk := streamer.queue.get()) is not None:
                for token in chunk if tap else [chunk]:
                    step = [token] if tap else token
                    new.extend(step)
                    if tap and token in self._eos_ids:
                        tap.next_row()  # its logits; the end of the reply is not a token of it
                        continue
                    pending += len(step)
                    piece, prefix, read = self._next_piece(new, prefix, read)
                    if tap:  # one delta per token, each with its probabilities
                        row = tap.next_row()
                        info = hf_inspect.info_for(self, row, token, piece, request, seen)
                        seen.append(token)
                        yield Delta(0, piece, pending, token=info)
                        pending = 0
                    elif piece:
                        yield Delta(0, piece, pending)
                        pending = 0
        finally:
            abort.set()
            thread.join()
            if tap:
                tap.close()
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

    def __init__(self, tuner: ThreadTuner | None = None, torch=None):
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False
        self._tuner, self._torch = tuner, torch
        self._last = None

    def put(self, value) -> None:
        """Receive the prompt ids first (skipped), then each step's new ids."""
        if not self._prompt_seen:
            self._prompt_seen = True
            self._last = time.perf_counter()
            return
        self.queue.put(value.reshape(-1).tolist())
        self._tune()

    def _tune(self) -> None:
        """Time the step just done; set torch's threads for the next (it runs in this thread)."""
        if self._tuner is None:
            return
        now = time.perf_counter()
        self._tuner.record(self._torch.get_num_threads(), 1, now - self._last)
        n = self._tuner.threads(1)
        if n != self._torch.get_num_threads():
            self._torch.set_num_threads(n)
        self._last = time.perf_counter()

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
