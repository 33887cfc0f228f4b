"""Switching models in the page: what is offered, loading, a failed load, and who may."""

from __future__ import annotations

import os

import pytest
from gradio_client import Client

from chat.models import default_model_path
from studio.config import AppConfig
from studio.model_switch import catalog
from tests.security.conftest import dependency, queue_call, start_app


@pytest.fixture
def models_dir(tmp_path):
    folder = tmp_path / "data" / "models"
    folder.mkdir(parents=True)
    os.symlink(default_model_path(), folder / "second-copy.gguf")
    (folder / "broken.gguf").write_bytes(b"GGUF" + bytes(64))
    return folder


def test_the_catalog_offers_what_is_on_this_machine(models_dir):
    entries = catalog(AppConfig(data_dir=models_dir.parent))
    labels = [e["label"] for e in entries]
    assert labels[0].startswith("SmolLM2-135M-Instruct.Q4_1.gguf (bundled")
    assert any(lab.startswith("second-copy.gguf") for lab in labels)
    assert any(lab.startswith("broken.gguf") for lab in labels)


def test_a_remote_engine_adds_its_models_and_a_replaced_model_is_closed(tmp_path):
    import dataclasses

    from chat.backends.standin import StandinBackend
    from studio.model_switch import free

    local = StandinBackend()
    config = AppConfig(data_dir=tmp_path)
    assert not [e for e in catalog(config, local) if e["kind"] == "remote"]
    engine = StandinBackend()  # declares ``remote`` and has what chat.backends.base.Remote asks
    engine.capabilities = dataclasses.replace(engine.capabilities, remote=True)
    engine.base_url = "http://127.0.0.1:9/v1"
    engine.models = lambda: ["big", "small"]
    remote = [e for e in catalog(config, engine) if e["kind"] == "remote"]
    assert [(e["id"], e["source"], e["model"]) for e in remote] == [
        ("remote:big", engine.base_url, "big"),
        ("remote:small", engine.base_url, "small"),
    ]
    free(local)
    assert local.closed


def load(app, entry_id, backend="llama-cpp", session="switcher"):
    fn = dependency(app.url, trigger="model-load")
    return queue_call(app.url, fn, [entry_id, backend], session)


def test_loading_a_model_and_a_failed_load(models_dir):
    app = start_app(models_dir.parent)  # private: the person at the machine may switch
    try:
        client = Client(app.url, verbose=False)
        second = "gguf:second-copy.gguf"
        out = load(app, second)
        assert out["success"], out
        assert "Loaded **second-copy.gguf**" in out["output"]["data"][0]
        assert client.predict(api_name="/model")["model"] == "second-copy.gguf"
        reply = client.predict(message="Hi", settings={"max_new_tokens": 4}, api_name="/chat")
        assert reply["stats"]["model"] == "second-copy.gguf"
        bad = load(app, "gguf:broken.gguf")
        assert not bad["success"] and "Still serving second-copy.gguf" in str(bad["output"])
        assert client.predict(api_name="/model")["model"] == "second-copy.gguf"
    finally:
        app.stop()


def test_visitors_of_a_shared_app_may_not_switch_unless_allowed(models_dir):
    second = "gguf:second-copy.gguf"
    # Who may switch does not depend on the model: the app starts on the stand-in.
    app = start_app(models_dir.parent, "--host", "0.0.0.0", "--backend", "standin")
    try:
        out = load(app, second)
        assert not out["success"] and "--allow-model-switch" in str(out["output"])
    finally:
        app.stop()
    app = start_app(
        models_dir.parent, "--host", "0.0.0.0", "--allow-model-switch", "--backend", "standin"
    )
    try:
        assert load(app, second)["success"]
    finally:
        app.stop()
