"""Loading a transformers model: local folders, GGUF files and hub ids, offline-aware.

Every failure becomes a ``ModelLoadError`` that says what to do instead.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from chat.errors import ModelLoadError

# Some models declare windows of 128k tokens; the UI and the prompt fitting
# never need that much, and the KV cache for it would not fit in memory.
MAX_WINDOW = 8192
DEFAULT_WINDOW = 2048
_FIX = (
    "Pass --model with a local model folder or a .gguf file, "
    "or run without --model to use the bundled SmolLM2."
)


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
