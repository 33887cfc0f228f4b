"""Trained adapters on disk: saved atomically, listed, loaded back onto their base model.

An adapter is a folder ``root/<id>/`` holding the peft adapter (``adapter_config.json`` and
``adapter_model.safetensors``) or, for BitFit, ``bitfit.safetensors``; the tokenizer (its chat
template as trained); and ``adapter_meta.json`` (what was trained, how, by whom, its losses).

A save writes everything into a hidden temporary folder, fsyncs it, then renames it into
place, so a job killed mid-save leaves the previous checkpoint (or nothing), never a
half-written adapter that loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from training.errors import TrainingError, UnknownAdapter
from training.methods import BITFIT_FILE, is_bitfit, trainable_state

META = "adapter_meta.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,80}$")


def new_id(kind: str) -> str:
    """A fresh adapter id: ``sft-20261130-123456-ab12``."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def make_meta(adapter_id, name, settings, base_model, owner, result, state) -> dict:
    """``adapter_meta.json``'s content for a run's current figures."""
    return {
        "id": adapter_id,
        "name": name or adapter_id,
        "kind": settings.kind,
        "method": settings.method.method,
        "base_model": base_model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": result.steps,
        "total_steps": result.total_steps,
        "state": state,
        "metrics": result.metrics,
        "train_loss": result.train_loss,
        "eval_loss": result.eval_loss,
        "trainable": result.trainable,
        "total_params": result.total_params,
        "owner": owner,
        "start_from": settings.start_from,
        "held_out_accuracy": _held_out_accuracy(result.metrics),
        "settings": settings.model_dump(),
    }


def _held_out_accuracy(metrics: list[dict]) -> float | None:
    """The last evaluation's pairwise accuracy (reward model) or preference accuracy (DPO)."""
    for m in reversed(metrics):
        for key in ("eval_accuracy", "eval_rewards/accuracies"):
            if key in m:
                return m[key]
    return None


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for d in [folder, folder.parent]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_adapter(model, tokenizer, root: Path, adapter_id: str, meta: dict) -> Path:
    """Write the adapter of ``model`` to ``root/adapter_id`` atomically; its folder."""
    if not _ID.match(adapter_id):
        raise TrainingError(f"Adapter id {adapter_id!r}: use letters, digits, - and _ only.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{adapter_id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if is_bitfit(model):
            from safetensors.torch import save_file

            save_file(trainable_state(model), str(tmp / BITFIT_FILE))
        else:
            model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        (tmp / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _fsync_tree(tmp)
        _swap_in(tmp, root / adapter_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / adapter_id


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest``; an old ``dest`` goes aside first and is then removed.

    A directory cannot replace a non-empty one in one rename; if the process dies between
    the two renames, ``recover`` puts the old one back.
    """
    old = dest.parent / f".old-{dest.name}"
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def recover(root: Path) -> None:
    """Tidy ``root`` after a killed save: restore an adapter set aside, drop temporary folders.
    Only when no save is running (the job runner calls it once its child has ended)."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(".old-"):
            dest = root / path.name.removeprefix(".old-")
            if dest.exists():
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, dest)
        elif path.name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)


def read_meta(adapter_dir: Path) -> dict:
    """The adapter's ``adapter_meta.json``; ``UnknownAdapter`` when it is not a saved adapter."""
    path = Path(adapter_dir) / META
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UnknownAdapter(
            f"No trained adapter at {adapter_dir}; pick one from the list of adapters."
        ) from None


def _folders(root: Path) -> list[Path]:
    """Adapter folders under ``root``: a finished save, or one set aside by a save that died
    between its two renames (read where it lies; ``recover`` moves it back). Temporary folders
    a dead save left over an hour ago are removed; a live save's are left alone."""
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".tmp-"):
            if time.time() - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".old-"):
            found.setdefault(path.name.removeprefix(".old-"), path)
        elif not path.name.startswith(".") and (path / META).is_file():
            found[path.name] = path
    return list(found.values())


def list_adapters(root: Path, owner: str | None = None) -> list[dict]:
    """Saved adapters under ``root`` (newest first), each its meta plus ``size_bytes`` and
    ``path``; only ``owner``'s when one is given."""
    out = []
    for folder in _folders(Path(root)):
        try:
            meta = read_meta(folder)
        except UnknownAdapter:
            continue
        if owner is not None and meta.get("owner", "") != owner:
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        out.append({**meta, "size_bytes": size, "path": str(folder)})
    out.sort(key=lambda m: m.get("created", ""), reverse=True)
    return out


def adapter_bytes(adapter_dir: Path) -> int:
    """Bytes of the trained weights alone (not the tokenizer or the meta)."""
    names = ("adapter_model.safetensors", "adapter_model.bin", BITFIT_FILE)
    return sum((Path(adapter_dir) / n).stat().st_size for n in names
               if (Path(adapter_dir) / n).is_file())  # fmt: skip


def apply_saved(model, adapter_dir: Path, trainable: bool = False):
    """``model`` with the saved adapter applied (a peft model, or the model with BitFit's
    trained tensors loaded into it)."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / BITFIT_FILE).is_file():
        from safetensors.torch import load_file

        missing = model.load_state_dict(load_file(str(adapter_dir / BITFIT_FILE)), strict=False)
        if missing.unexpected_keys:
            raise TrainingError(
                f"The BitFit adapter {adapter_dir.name} does not fit this base model; load the "
                "base it was trained on."
            )
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def load_adapter(base_model, adapter_dir: Path, root: Path | None = None):
    """The base model (a loaded model, or a path/id for ``load_base``) with the adapter
    applied, in eval mode. An adapter trained on top of another (``start_from``) gets that
    one merged in first (looked up in ``root``, by default the adapter's own folder's parent).
    """
    adapter_dir = Path(adapter_dir)
    meta = read_meta(adapter_dir)
    if isinstance(base_model, str):
        from training.model import load_base

        base_model, _ = load_base(base_model)
    if meta.get("start_from"):
        parent = Path(root or adapter_dir.parent) / meta["start_from"]
        base_model = merged(load_adapter(base_model, parent, root))
    if meta.get("kind") == "reward":
        from training.reward import seq_cls_for

        base_model = seq_cls_for(base_model, adapter_dir)
    net = apply_saved(base_model, adapter_dir)
    net.eval()
    return net


def merged(net):
    """A plain model with a peft adapter folded into its weights (BitFit's already is)."""
    return net.merge_and_unload() if hasattr(net, "merge_and_unload") else net
