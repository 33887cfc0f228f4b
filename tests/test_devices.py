"""Device choice: GPU offload when present, CPU otherwise, overrides honoured.

No GPU here, so the GPU side is checked against stand-ins for the two probes
(``llama_supports_gpu_offload`` and ``torch.cuda.is_available``); the CPU side
runs for real in the model tests.
"""

from types import SimpleNamespace

import llama_cpp
import pytest

from chat.backends.llama_cpp_backend import gguf_offload_layers
from chat.backends.transformers_backend import _pick_device
from chat.errors import ModelLoadError


@pytest.mark.parametrize(
    "gpu, device, layers, expected",
    [
        (True, "auto", None, -1),
        (False, "auto", None, 0),
        (True, "cpu", None, 0),
        (True, "auto", 12, 12),
        (True, "cuda", None, -1),
        (False, "auto", 12, 0),
    ],
)
def test_llama_offload_layers(monkeypatch, gpu, device, layers, expected):
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: gpu)
    assert gguf_offload_layers(device, layers) == expected


def test_llama_cuda_without_gpu_build_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    with pytest.raises(ModelLoadError, match="GGML_CUDA=on"):
        gguf_offload_layers("cuda", None)


def test_this_machine_runs_llama_on_cpu():
    assert gguf_offload_layers("auto", None) == (
        -1 if llama_cpp.llama_supports_gpu_offload() else 0
    )


def fake_torch(cuda: bool):
    import torch

    return SimpleNamespace(
        cuda=SimpleNamespace(is_available=lambda: cuda),
        device=torch.device,
        float16=torch.float16,
        float32=torch.float32,
    )


@pytest.mark.slow  # importing torch takes seconds
def test_transformers_uses_cuda_in_half_precision_when_available():
    import torch

    assert _pick_device(fake_torch(True), "auto") == (torch.device("cuda"), torch.float16)
    assert _pick_device(fake_torch(False), "auto") == (torch.device("cpu"), torch.float32)
    assert _pick_device(fake_torch(True), "cpu") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ModelLoadError, match="--device cpu"):
        _pick_device(fake_torch(False), "cuda")
