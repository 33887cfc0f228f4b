"""Take a trained adapter out of the app: the peft folder, a merged model, a GGUF LoRA.

A GGUF LoRA adapter is what llama.cpp loads on top of the original GGUF model
(``Llama(model_path=base.gguf, lora_path=adapter.gguf)``). It holds, for each
adapted weight ``W`` (ggml name ``blk.N.attn_q.weight``), the two low-rank
factors as ``blk.N.attn_q.weight.lora_a`` and ``.lora_b``, plus three keys:
``general.type = adapter``, ``adapter.type = lora`` and ``adapter.lora.alpha``.
llama.cpp adds ``scale * (alpha / rank) * B @ (A @ x)`` to ``W @ x``, where rank
is read off B, so peft's factors go in as they are: A is ``(rank, in)`` and B is
``(out, rank)`` in numpy order (ggml reverses the dimensions: ``A.ne = [in, rank]``).

One twist: llama.cpp's converter reorders the rows of Llama's q and k
projections (it interleaves the two halves of each head for its rotary
embedding), and transformers undoes that when it reads a GGUF. The adapter's
output side (the rows of B) must get the same reordering, or every q and k
correction lands on the wrong dimension.

Every export is written beside its destination and moved into place in one rename,
so a crash never leaves a half-written export under the final name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from chat.errors import ChatStudioError

META = "adapter_meta.json"  # the app's own description of an adapter (base model, steps...)
# Architectures whose q/k rows llama.cpp's converter permutes (LlamaModel.permute).
PERMUTED = {"llama"}
SUPPORTED = PERMUTED  # the only family tested end to end; others would need their own rules
_LAYER_PREFIX = "base_model.model."


class ExportError(ChatStudioError):
    """An adapter could not be exported; the message says what to change."""


# -- the peft folder and a merged model --------------------------------------


def export_peft(adapter_dir: str | Path, dest: str | Path) -> Path:
    """Copy the peft adapter folder (``adapter_config.json``, weights, meta) to ``dest``."""
    src = _adapter_folder(adapter_dir)
    dest = _fresh(dest)
    with _staging(dest) as tmp:
        for item in sorted(src.iterdir()):
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
    return dest


def export_merged(adapter_dir: str | Path, dest: str | Path, base: str | None = None) -> Path:
    """Save base model + adapter as one ordinary Hugging Face model folder (weights merged).

    ``base`` is the base model as ``training.model.load_base`` accepts it; by default
    the adapter's ``adapter_meta.json`` (or its ``adapter_config.json``) names it.
    """
    from training.model import load_base

    src = _adapter_folder(adapter_dir)
    dest = _fresh(dest)
    base = base or base_model_of(src)
    net, tokenizer = load_base(base)
    merged = merge(net, src)
    with _staging(dest) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return dest


def merge(net, adapter_dir: str | Path):
    """``net`` with the adapter's weights added in (an adapter it started from first); a
    plain transformers model again."""
    from chat.backends.hf_adapter import BITFIT_FILE, apply_adapter, read_meta

    folder = Path(adapter_dir)
    if read_meta(folder).get("kind") == "reward":
        raise ExportError(
            "A reward model scores replies with its own head; export its peft folder instead."
        )
    if not (folder / BITFIT_FILE).is_file():
        config = _config(folder)
        if config.get("peft_type") in _PROMPT_LEARNING:
            raise ExportError(
                f"A {config['peft_type']} adapter adds virtual tokens instead of changing "
                "weights, so it cannot be merged; export the peft folder instead."
            )
    return apply_adapter(net, folder, merge=True)


_PROMPT_LEARNING = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"}


def base_model_of(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on (the app's meta first, then peft's config)."""
    folder = Path(adapter_dir)
    meta = folder / META
    if meta.is_file():
        base = json.loads(meta.read_text(encoding="utf-8")).get("base_model")
        if base:
            return str(base)
    base = _config(folder).get("base_model_name_or_path")
    if not base:
        raise ExportError(
            f"{folder} does not say which base model it adapts; pass base= (a model folder, "
            "a .gguf file or a hub id)."
        )
    return str(base)


# -- GGUF LoRA -----------------------------------------------------------------


def export_gguf_lora(adapter_dir: str | Path, base_gguf: str | Path, dest: str | Path) -> Path:
    """Write the LoRA adapter as a GGUF adapter file for llama.cpp and return its path.

    ``base_gguf`` is the GGUF model the adapter will be loaded on: its architecture,
    head counts and tensor shapes decide the names, the q/k reordering and the checks.
    """
    import numpy as np
    from gguf import GGUFReader, GGUFType, GGUFWriter, Keys

    src = _adapter_folder(adapter_dir)
    chain = _chain(src)
    if len(chain) == 1:
        rank_alpha, pairs = _scaled_pairs(src)
    else:  # an adapter trained on top of another: one LoRA of their summed updates
        rank_alpha, pairs = _stacked(chain)
    if not Path(base_gguf).is_file():
        raise ExportError(
            f"GGUF model not found: {base_gguf}. Pass the .gguf file the adapter's base "
            "model was converted from (the bundled SmolLM2 for adapters trained here)."
        )
    base = _base_layout(GGUFReader(str(base_gguf)), Path(base_gguf))
    tensors = []
    for hf_name, (a, b) in sorted(pairs.items()):
        name = _gguf_name(hf_name, base)
        a = a.astype(np.float32)
        b = b.astype(np.float32)
        if base["arch"] in PERMUTED and name.split(".")[2] in ("attn_q", "attn_k"):
            heads = base["n_head"] if ".attn_q." in name else base["n_head_kv"]
            b = permute_rows(b, heads)
        want = base["shapes"][name]  # ggml order: [in, out]
        if (a.shape[1], b.shape[0]) != tuple(want):
            raise ExportError(
                f"The adapter's {hf_name} is {b.shape[0]}x{a.shape[1]} but the GGUF model's "
                f"{name} is {want[1]}x{want[0]}: this adapter was trained on another base model."
            )
        tensors.append((name, a, b))

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, arch=base["arch"])
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, rank_alpha)
        for name, a, b in tensors:
            writer.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
            writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        _publish(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _chain(folder: Path) -> list[Path]:
    """The adapter and those it was trained on top of (``start_from``), first one first."""
    from chat.backends.hf_adapter import read_meta

    chain = [folder]
    while parent := read_meta(chain[0]).get("start_from"):
        if len(chain) > 4:
            raise ExportError(f"{folder.name}: its chain of start_from adapters is too long.")
        chain.insert(0, folder.parent / parent)
    return chain


def _scaled_pairs(folder: Path) -> tuple[float, dict]:
    """``(alpha as llama.cpp reads it, {module: (A, B)})`` of one LoRA adapter folder."""
    config = _config(folder) if (folder / "adapter_config.json").is_file() else {}
    if config.get("peft_type") != "LORA":
        raise ExportError(
            f"Only LoRA adapters can become GGUF adapters ({folder.name} is "
            f"{config.get('peft_type', 'BitFit')}); export the peft folder or a merged model."
        )
    if config.get("use_dora"):
        raise ExportError("llama.cpp cannot apply DoRA adapters; train a plain LoRA to export.")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ExportError(
            "This adapter uses different ranks or alphas per layer; llama.cpp applies one "
            "alpha to all, so train it with a single rank and alpha to export to GGUF."
        )
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # peft scales by alpha/sqrt(r), llama.cpp by alpha/r
        alpha *= math.sqrt(int(config["r"]))
    return alpha, _lora_pairs(folder)


def _stacked(chain: list[Path]) -> tuple[float, dict]:
    """Several LoRAs as one: ``sum_i s_i B_i A_i = [s_1 B_1 ... s_n B_n] @ [A_1; ...; A_n]``.

    Each scale goes into its B; every module is padded with zeros to the same rank R, and
    alpha = R, so llama.cpp's alpha/rank is 1 for all.
    """
    import numpy as np

    parts: dict[str, list] = {}
    for folder in chain:
        alpha, pairs = _scaled_pairs(folder)
        for name, (a, b) in pairs.items():
            parts.setdefault(name, []).append((a, b * (alpha / a.shape[0])))
    rank = max(sum(a.shape[0] for a, _ in ab) for ab in parts.values())
    out = {}
    for name, ab in parts.items():
        a = np.concatenate([x for x, _ in ab], axis=0)
        b = np.concatenate([y for _, y in ab], axis=1)
        pad = rank - a.shape[0]
        a = np.pad(a, ((0, pad), (0, 0)))
        b = np.pad(b, ((0, 0), (0, pad)))
        out[name] = (a, b)
    return float(rank), out


def permute_rows(weights, n_head: int):
    """Reorder the rows of a q or k projection (or of LoRA's B) as llama.cpp's converter does:
    within each head, the first and second halves of the rotary dimensions interleave."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _base_layout(reader, path: Path) -> dict:
    """Architecture, head counts and tensor shapes (ggml order) of the base GGUF model."""

    def value(key: str):
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    if value("general.type") == "adapter":
        raise ExportError(f"{path.name} is itself an adapter; pass the GGUF model it adapts.")
    if arch not in SUPPORTED:
        raise ExportError(
            f"GGUF LoRA export supports Llama-family models (SmolLM2, Llama, Mistral); "
            f"{path.name} is {arch!r}. Export the peft folder or a merged model instead."
        )
    return {
        "arch": arch,
        "n_head": int(value(f"{arch}.attention.head_count")),
        "n_head_kv": int(
            value(f"{arch}.attention.head_count_kv") or value(f"{arch}.attention.head_count")
        ),
        "n_block": int(value(f"{arch}.block_count")),
        "shapes": {t.name: [int(x) for x in t.shape] for t in reader.tensors},
    }


def _gguf_name(hf_name: str, base: dict) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q.weight`` (via gguf's name map)."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next(k for k, v in MODEL_ARCH_NAMES.items() if v == base["arch"])
    name = get_tensor_name_map(arch, base["n_block"]).get_name(hf_name)
    if name is None or f"{name}.weight" not in base["shapes"]:
        if hf_name.endswith(("lm_head", "embed_tokens")):
            raise ExportError(
                f"The adapter changes {hf_name}, which llama.cpp adapters cannot carry for this "
                "model; train with target_modules limited to the attention and MLP layers."
            )
        raise ExportError(f"The GGUF model has no weight for the adapter's {hf_name}.")
    return f"{name}.weight"


def _lora_pairs(folder: Path) -> dict:
    """``{module name: (A, B)}`` as numpy arrays, from the adapter's safetensors (or .bin)."""
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors.numpy import load_file

        state = load_file(str(weights))
    else:
        import torch

        raw = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
        state = {k: v.float().numpy() for k, v in raw.items()}
    pairs: dict[str, list] = {}
    for key, value in state.items():
        for part, i in ((".lora_A.weight", 0), (".lora_B.weight", 1)):
            if key.endswith(part):
                module = key.removeprefix(_LAYER_PREFIX).removesuffix(part)
                pairs.setdefault(module, [None, None])[i] = value
                break
        else:
            raise ExportError(
                f"The adapter holds {key}, which is not a LoRA factor (trained embeddings or "
                "extra modules); llama.cpp adapters carry LoRA factors only."
            )
    if not pairs or any(a is None or b is None for a, b in pairs.values()):
        raise ExportError(f"{folder} has no complete LoRA factor pairs to export.")
    return {k: (v[0], v[1]) for k, v in pairs.items()}


# -- files ---------------------------------------------------------------------


def _adapter_folder(adapter_dir: str | Path) -> Path:
    folder = Path(adapter_dir)
    names = ("adapter_config.json", "bitfit.safetensors")
    if not any((folder / name).is_file() for name in names):
        raise ExportError(
            f"{folder} is not a peft adapter folder (no adapter_config.json); pick a trained "
            "adapter from the list."
        )
    return folder


def _config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))


def _fresh(dest: str | Path) -> Path:
    dest = Path(dest)
    if dest.exists():
        raise ExportError(f"{dest} already exists; choose a new folder name or remove it first.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


class _staging:
    """A temporary folder beside ``dest``, renamed to ``dest`` when the block succeeds."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        for item in self.tmp.iterdir():
            _publish(item)
        _publish(self.tmp)
        os.replace(self.tmp, self.dest)


def _publish(path: Path) -> None:
    """Give a temporary file or folder the usual permissions (mkstemp makes them private)
    and flush it to disk before it is renamed into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
