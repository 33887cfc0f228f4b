"""The Model tab's domain: what can be loaded without a download, and loading it.

A new model is loaded beside the old one, then swapped in once the
generations under way finish; only then is the old one freed. A load that
fails (a corrupt file, too little memory) leaves the old model serving.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

from chat.errors import ChatStudioError, ModelLoadError
from chat.models import ModelSpec, default_model_path, load_backend
from studio.access import Access, Caller
from studio.config import AppConfig


def catalog(
    config: AppConfig, backend=None, owner: str | None = None, adapters: bool = True
) -> list[dict]:
    """``{id, label, kind}`` of every model loadable without a download.

    The bundled GGUF, ``.gguf`` files under ``--models-dir`` (default
    ``<data dir>/models``), causal LMs in the Hugging Face cache, the
    models a remote engine lists, and trained adapters (``owner``'s only, when
    given; see ``adapter_owner``). Ids never hold a server path.
    """
    entries = []
    try:
        bundled = default_model_path()
        entries.append(_gguf(bundled, "bundled"))
    except ModelLoadError:
        bundled = None
    folder = Path(config.models_dir or config.data_dir / "models")
    if folder.is_dir():
        for path in sorted(folder.rglob("*.gguf")):
            if path != bundled:
                entries.append(_gguf(path, str(path.relative_to(folder))))
    entries += _hf_cache()
    if backend is not None and backend.capabilities.remote:  # chat.backends.base.Remote
        try:
            for name in backend.models():
                entries.append(
                    {"id": f"remote:{name}", "label": f"{name} (engine at {backend.base_url})",
                     "kind": "remote", "source": backend.base_url, "model": name}
                )  # fmt: skip
        except ChatStudioError:
            pass
    if adapters:
        entries += _adapters(config, owner)
    return entries


def adapters_dir(config: AppConfig) -> Path:
    """Where the Train tab saves adapters: ``<data dir>/training/adapters/<id>/``."""
    return Path(config.data_dir) / "training" / "adapters"


def _adapters(config: AppConfig, owner: str | None) -> list[dict]:
    """Trained adapters (a folder with ``adapter_meta.json``), newest first; they run on
    transformers over the base model they name."""
    from chat.backends.hf_adapter import read_meta

    folder = adapters_dir(config)
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.startswith(".") or not (path / "adapter_meta.json").is_file():
            continue
        try:
            meta = read_meta(path)
        except ChatStudioError:
            continue
        if meta.get("kind") == "reward" or not meta.get("base_model"):
            continue  # a reward model scores replies; it does not chat
        if owner is not None and meta.get("owner", "") != owner:
            continue
        base = Path(str(meta["base_model"])).name
        out.append(
            {"id": f"adapter:{path.name}", "created": meta.get("created", ""),
             "label": f"{meta.get('name') or path.name} ({meta.get('kind', 'sft')} "
                      f"{meta.get('method', 'adapter')} on {base}, transformers)",
             "kind": "adapter", "source": str(path), "base": str(meta["base_model"])}
        )  # fmt: skip
    out.sort(key=lambda e: e["created"], reverse=True)
    return out


def _gguf(path: Path, where: str) -> dict:
    """A GGUF entry; its id and label name it relative to the models folder (or 'bundled'):
    the server's own paths are never shown to visitors."""
    size = path.stat().st_size / 2**20
    return {
        "id": f"gguf:{where}",
        "label": f"{path.name} ({where}, {size:,.0f} MB)",
        "kind": "gguf",
        "source": str(path),
    }


def _hf_cache() -> list[dict]:
    """Causal language models already in the Hugging Face cache (nothing is downloaded)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache, or an unreadable one: nothing to offer
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        files = {f.file_name for rev in repo.revisions for f in rev.files}
        if "config.json" in files and files & {"model.safetensors", "pytorch_model.bin"}:
            out.append(
                {"id": f"hf:{repo.repo_id}", "label": f"{repo.repo_id} (Hugging Face cache)",
                 "kind": "hf", "source": repo.repo_id}
            )  # fmt: skip
    return out


def spec_for(entry: dict, runtime_backend: str) -> ModelSpec:
    """The ``ModelSpec`` of a catalog entry (a GGUF loads with llama.cpp or transformers)."""
    if entry["kind"] == "remote":
        return ModelSpec("openai", entry["source"], model=entry["model"])
    if entry["kind"] == "hf":
        return ModelSpec("transformers", entry["source"])
    if entry["kind"] == "adapter":  # always transformers: llama.cpp cannot apply a peft folder
        base = Path(entry["base"])
        if base.suffix == ".gguf":
            return ModelSpec("transformers", str(base.parent), base.name, adapter=entry["source"])
        return ModelSpec("transformers", entry["base"], adapter=entry["source"])
    path = Path(entry["source"])
    if runtime_backend == "transformers":
        return ModelSpec("transformers", str(path.parent), gguf_file=path.name)
    return ModelSpec("llama-cpp", str(path))


class ModelSwitcher:
    """Loads another model for the engine, with the rights and the clean-up that takes."""

    def __init__(self, engine, config: AppConfig, access: Access):
        self.engine = engine
        self.config = config
        self.access = access

    def may_switch(self, caller: Caller) -> bool:
        """Admins may; visitors of a shared app only with ``--allow-model-switch``."""
        return caller.admin or self.config.allow_model_switch

    def adapter_owner(self, caller: Caller) -> str | None:
        """Whose adapters ``caller`` sees (as the Train tab stores them): a login's, else the
        browser's; on a private app without logins, all (None)."""
        if self.access.logins:
            return f"user:{caller.user}"
        if self.access.private:
            return None
        return self.access.owner(caller.session)

    def entries(self, caller: Caller | None) -> list[dict]:
        """What ``caller`` may pick (no adapters for a caller not known yet)."""
        if caller is None:
            return catalog(self.config, self.engine.backend, adapters=False)
        return catalog(self.config, self.engine.backend, self.adapter_owner(caller))

    def load(self, caller: Caller, entry_id: str, backend: str = "llama-cpp") -> dict:
        """Load the catalog entry ``entry_id``; returns what is loaded now, with the time taken."""
        if not self.may_switch(caller):
            from studio.access import AccessError

            raise AccessError(
                "One model serves everyone here, so only admins may load another "
                "(or start the app with --allow-model-switch)."
            )
        entries = {e["id"]: e for e in self.entries(caller)}
        if entry_id not in entries:
            raise ModelLoadError(f"Unknown model {entry_id!r}; refresh the list and pick again.")
        old_name = self.engine.backend.info.model
        t0 = time.perf_counter()
        try:
            new = load_backend(
                spec_for(entries[entry_id], backend),
                self.config.device,
                self.config.n_ctx,
                self.config.n_gpu_layers,
                self.config.n_threads,
                self.config.runtime,
                os.environ.get("CHAT_STUDIO_OPENAI_API_KEY"),
                self.config.slots(),
            )
        except ChatStudioError as exc:
            text = _unpathed(exc, entries[entry_id])
            raise ModelLoadError(f"{text} Still serving {old_name}.") from None
        except Exception as exc:  # out of memory and the like: the old model stays
            raise ModelLoadError(
                f"Could not load it ({type(exc).__name__}: {_unpathed(exc, entries[entry_id])}). "
                f"Still serving {old_name}."
            ) from None
        free(self.engine.swap(new))
        info = new.info
        return {
            "model": info.model,
            "backend": info.backend,
            "device": info.device,
            "n_ctx": info.n_ctx,
            "load_s": round(time.perf_counter() - t0, 2),
        }


def _unpathed(exc: Exception, entry: dict) -> str:
    """The error's text with the entry's server path (and folder) put as the list names it."""
    text = str(exc)
    if entry["kind"] == "gguf":
        path = Path(entry["source"])
        name = entry["id"].removeprefix("gguf:")
        text = text.replace(str(path), name).replace(str(path.parent), "the models folder")
    if entry["kind"] == "adapter":
        text = text.replace(entry["source"], entry["id"].removeprefix("adapter:"))
        text = text.replace(str(Path(entry["source"]).parent), "the adapters folder")
    return text


def free(backend) -> None:
    """Release a backend's model (its process, its memory, its GPU cache)."""
    backend.close()
    gc.collect()
