"""Backends are chosen by name through one registry; an unknown name lists the valid ones."""

from __future__ import annotations

import pytest

from chat.backends import registry
from chat.backends.base import Capabilities
from chat.errors import ModelLoadError, UnsupportedSettingError
from chat.models import ModelSpec, load_backend, resolve_model
from chat.settings import DecodingSettings


def test_the_built_in_backends_are_registered():
    assert registry.names() == ["llama-cpp", "transformers", "openai"]
    assert registry.names(include_tests=True)[-1] == "standin"


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(registry.UnknownBackend) as err:
        registry.get("vllm")
    assert "'vllm'" in str(err.value)
    for name in ("llama-cpp", "transformers", "openai", "standin (for tests)"):
        assert name in str(err.value)
    assert isinstance(err.value, ModelLoadError)  # a ChatStudioError: the CLI prints one line
    with pytest.raises(ModelLoadError, match="choose one of: auto, llama-cpp, transformers"):
        resolve_model(None, "vllm")


def test_backend_and_model_resolve_through_the_registry():
    assert resolve_model("gpt2") == ModelSpec("transformers", "gpt2")
    assert resolve_model(None).backend == "llama-cpp"
    assert resolve_model("tiny", "standin") == ModelSpec("standin", "tiny")
    with pytest.raises(ModelLoadError, match="--backend transformers"):
        resolve_model("gpt2", "llama-cpp")
    with pytest.raises(ModelLoadError, match="Unknown backend 'openai'"):
        resolve_model(None, "openai")  # an engine is reached by --openai-base-url


def test_a_registered_factory_is_what_load_backend_calls():
    seen = []

    def factory(spec, options):
        seen.append((spec, options))
        return "loaded"

    registry.register("mock", factory, {"greedy"}, for_tests=True)
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register("mock", factory, {"greedy"})
        spec = ModelSpec("mock", "m")
        assert load_backend(spec, "cpu", n_ctx=512, parallel=3) == "loaded"
        assert seen[0][0] == spec
        assert (seen[0][1].device, seen[0][1].n_ctx, seen[0][1].parallel) == ("cpu", 512, 3)
        assert "mock" not in registry.names() and "mock" in registry.names(include_tests=True)
    finally:
        registry.unregister("mock")
    with pytest.raises(registry.UnknownBackend):
        load_backend(ModelSpec("mock", "m"))


def test_the_beam_hint_names_the_backends_that_declare_beam():
    assert registry.offering("beam") == ["transformers"]  # the stand-in is for tests only
    caps = Capabilities(frozenset({"greedy", "sample"}), 1)
    with pytest.raises(
        UnsupportedSettingError, match=r"beam search needs the transformers backend"
    ):
        caps.check(DecodingSettings(strategy="beam", num_beams=2), "llama-cpp")
    registry.register("beamer", lambda s, o: None, {"greedy", "beam"})
    try:
        with pytest.raises(UnsupportedSettingError, match="needs the transformers or beamer"):
            caps.check(DecodingSettings(strategy="beam", num_beams=2), "llama-cpp")
    finally:
        registry.unregister("beamer")
