"""Hugging Face transformers backend: a model folder, a hub id or a GGUF file.

This is the backend that can do beam search and several candidates. A single
sampled or greedy reply streams token by token: ``generate()`` runs in a
worker thread and hands token ids over a queue, so the counts are exact.
torch and transformers are imported when a model is loaded, not on import.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.errors import ModelLoadError
from chat.prompting import TRANSCRIPT_STOPS, render_transcript
from chat.settings import MAX_CANDIDATES

# Some models declare windows of 128k tokens; the UI and the prompt fitting
# never need that much, and the KV cache for it would not fit in memory.
MAX_WINDOW = 8192
DEFAULT_WINDOW = 2048
_FIX = (
    "Pass --model with a local model folder or a .gguf file, "
    "or run without --model to use the bundled SmolLM2."
)


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


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a file system path rather than a hub id like ``org/model``."""
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith(".gguf")
        or os.path.isabs(name)
    )


def _locate(model: str, gguf_file: str | None) -> tuple[str, str | None, bool]:
    """Return ``(folder or hub id, gguf file name, is_local)``; raise if a local path is wrong."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf" and gguf_file is None:
        return str(path.parent), path.name, True
    if path.is_dir():
        if gguf_file is not None:
            if not (path / gguf_file).is_file():
                raise ModelLoadError(f"GGUF file not found: {path / gguf_file}. {_FIX}")
        elif not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) != 1:
                why = "several .gguf files; pass one of them" if ggufs else "no config.json"
                raise ModelLoadError(
                    f"{path} is not a transformers model folder ({why}). "
                    "Pass --model with a folder saved by save_pretrained() or a .gguf file."
                )
            gguf_file = ggufs[0]
        return str(path), gguf_file, True
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model folder nor a .gguf file. {_FIX}")
    if _looks_like_path(model):
        raise ModelLoadError(f"Model folder not found: {model}. {_FIX}")
    return model, gguf_file, False


def _offline() -> bool:
    """Whether the user switched the Hugging Face hub off (env or already-imported constant)."""
    truthy = {"1", "true", "yes", "on"}
    if any(
        os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens quickly.

    Without this check huggingface_hub retries a dead connection with backoff
    for most of a minute before giving up. Behind a proxy we cannot tell, so we try.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe():  # in a thread, because a slow DNS lookup ignores the socket timeout
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(ok)


def _load(cls, name: str, where: str, local: bool, **kwargs):
    """``cls.from_pretrained``, each failure turned into a ``ModelLoadError`` saying what to do."""
    if local:
        try:
            return cls.from_pretrained(where, **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"Could not load the model in {where}: {_reason(exc)}") from exc
    try:
        return cls.from_pretrained(where, local_files_only=True, **kwargs)
    except OSError:
        pass  # not (completely) in the cache
    except Exception as exc:
        raise ModelLoadError(f"Could not load {name!r} from the cache: {_reason(exc)}") from exc
    unreachable = (
        f"Could not load {name!r}: it is not in the local Hugging Face cache and the hub "
        f"cannot be reached. {_FIX}"
    )
    if _offline() or not _hub_reachable():
        raise ModelLoadError(unreachable)
    try:
        return cls.from_pretrained(where, **kwargs)
    except Exception as exc:
        from huggingface_hub.errors import RepositoryNotFoundError

        if _caused_by(exc, RepositoryNotFoundError):
            raise ModelLoadError(
                f"Could not load {name!r}: no such model on the Hugging Face hub "
                f"(or it is private). {_FIX}"
            ) from exc
        raise ModelLoadError(f"{unreachable} ({_reason(exc)})") from exc


def _caused_by(exc: BaseException | None, cls: type) -> bool:
    """Whether ``exc`` or an exception it was raised from is a ``cls``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, cls):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(exc: BaseException) -> str:
    """The first line of an exception, for a one-line error message."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _gguf_chat_template(path: Path) -> str | None:
    """The ``tokenizer.chat_template`` stored in a GGUF file's metadata, if any."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(path)).fields.get("tokenizer.chat_template")
        return field.contents() if field is not None else None
    except Exception:  # an unreadable template means a transcript prompt, not a failed load
        return None


def _window(config, n_ctx: int | None, name: str) -> int:
    """The context window: ``n_ctx`` if given, else what the model declares, capped."""
    declared = next(
        (
            v
            for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
            if isinstance(v := getattr(config, k, None), int) and v > 0
        ),
        None,
    )
    if n_ctx is None:
        return min(declared or DEFAULT_WINDOW, MAX_WINDOW)
    if declared is not None and n_ctx > declared:
        raise ModelLoadError(
            f"--n-ctx {n_ctx} is more than {name} supports ({declared} tokens); "
            f"pass --n-ctx {declared} or less."
        )
    return n_ctx
