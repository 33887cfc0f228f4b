"""Chatting with a trained adapter: the transformers backend loads base + adapter, the Model
tab lists the adapters (each visitor's own), and every Inspect view works on it.

A tiny Llama and a LoRA trained on it in the test stand in for the bundled model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chat.backends.transformers_backend import TransformersBackend
from chat.engine import ChatEngine
from chat.errors import ModelLoadError
from chat.inspection import Inspector
from chat.models import ModelSpec, resolve_model, with_adapter
from chat.settings import DecodingSettings
from tests.helpers.tiny_export import ANSWER, PROMPT, tiny_adapter

GREEDY = {"strategy": "greedy", "max_new_tokens": 12}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_adapter(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tuned(trained):
    base, adapter = trained
    return TransformersBackend(str(base), device="cpu", adapter=str(adapter))


def reply(backend, top_logprobs=0):
    engine = ChatEngine(backend)
    *_, last = engine.stream_turn(
        PROMPT[0]["content"], [], [], DecodingSettings(**GREEDY), top_logprobs=top_logprobs
    )
    return last


def test_the_adapter_changes_the_reply_and_the_name(trained, tuned):
    base, _ = trained
    plain = TransformersBackend(str(base), device="cpu")
    assert reply(plain).reply != ANSWER
    assert reply(tuned).reply == ANSWER
    assert tuned.info.model == "base + adapter tiny"
    assert not any("lora" in n for n, _ in tuned.model.named_modules())  # merged


def test_applied_and_merged_give_the_same_distribution(trained, tuned):
    base, adapter = trained
    applied = TransformersBackend(
        str(base), device="cpu", adapter=str(adapter), merge_adapter=False
    )
    assert any("lora" in n for n, _ in applied.model.named_modules())
    ids = tuned.tokenize(tuned.render(PROMPT))
    np.testing.assert_allclose(applied.next_logits(ids), tuned.next_logits(ids), atol=1e-4)
    assert reply(applied).reply == ANSWER


def test_every_inspect_view_works_on_the_adapter(tuned):
    from explain.logit_lens import lens
    from explain.model_parts import find_parts

    last = reply(tuned, top_logprobs=5)
    tokens = last.tokens[0]
    assert "".join(t["text"] for t in tokens) == ANSWER
    assert len(tokens[0]["top"]) == 5 and tokens[0]["top"][0]["text"] == "7"
    inspector = Inspector(ChatEngine(tuned))
    prompt = tuned.render(PROMPT)
    nxt = inspector.next_token(prompt, 5, DecodingSettings(**GREEDY), special=True)
    assert nxt["candidates"][0]["text"] == "7"
    # The same adapted model behind every view: the reply's first token has the same
    # probability in the chat's token view and in the next-token view.
    assert nxt["candidates"][0]["prob"] == pytest.approx(np.exp(tokens[0]["logprob"]), abs=1e-4)
    ppl = inspector.perplexity(prompt + ANSWER)
    assert ppl["perplexity"] > 1 and "".join(t["text"] for t in ppl["tokens"]).endswith(ANSWER)
    att = inspector.attention(prompt, layer=-1)
    assert att["layers"] == 2
    model, torch, device = tuned.internals()
    assert len(find_parts(model).layers) == 2
    ids = tuned.tokenize(prompt)
    assert lens(model, torch, tuned.piece, ids, device)


def test_reward_and_prompt_tuning_adapters_are_refused(trained, tmp_path):
    base, adapter = trained
    reward = tmp_path / "reward"
    reward.mkdir()
    (reward / "adapter_meta.json").write_text(json.dumps({"kind": "reward", "name": "judge"}))
    with pytest.raises(ModelLoadError, match="judge is a reward model"):
        TransformersBackend(str(base), device="cpu", adapter=str(reward))
    prompt = tmp_path / "prompt"
    prompt.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (prompt / "adapter_config.json").write_text(
        json.dumps({**config, "peft_type": "PROMPT_TUNING"})
    )
    with pytest.raises(ModelLoadError, match="virtual tokens"):
        TransformersBackend(str(base), device="cpu", adapter=str(prompt))


def test_an_adapter_on_another_base_model_says_so(trained, tmp_path):
    from tests.helpers.tiny_export import tiny_llama_dir

    _, adapter = trained
    other = tiny_llama_dir(tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config.update(hidden_size=48, intermediate_size=96)
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError):
        TransformersBackend(str(other), device="cpu", adapter=str(adapter))


def test_with_adapter_runs_on_transformers_only(trained, tmp_path):
    _, adapter = trained
    spec = with_adapter(resolve_model(None, "transformers"), adapter)
    assert (spec.backend, spec.gguf_file, spec.adapter) == (
        "transformers", "SmolLM2-135M-Instruct.Q4_1.gguf", str(adapter),
    )  # fmt: skip
    with pytest.raises(ModelLoadError, match="--backend transformers"):
        with_adapter(resolve_model(None, "llama-cpp"), adapter)
    with pytest.raises(ModelLoadError, match="Adapter folder not found"):
        with_adapter(ModelSpec("transformers", "x"), tmp_path / "nope")


# -- the Model tab's list ----------------------------------------------------------


def _saved(root, name, owner, kind="sft", base="/models/SmolLM2.gguf"):
    folder = root / "training" / "adapters" / name
    folder.mkdir(parents=True)
    meta = {"id": name, "name": name, "kind": kind, "method": "lora", "base_model": base,
            "owner": owner, "created": f"2026-11-30T12:00:0{len(name) % 10}"}  # fmt: skip
    (folder / "adapter_meta.json").write_text(json.dumps(meta))
    return folder


def test_the_catalog_lists_each_owners_adapters(tmp_path):
    from studio.config import AppConfig
    from studio.model_switch import catalog, spec_for

    _saved(tmp_path, "mine", "browser-a")
    _saved(tmp_path, "theirs", "browser-b")
    _saved(tmp_path, "judge", "browser-a", kind="reward")
    config = AppConfig(data_dir=tmp_path)
    adapters = [e for e in catalog(config, owner="browser-a") if e["kind"] == "adapter"]
    assert [e["id"] for e in adapters] == ["adapter:mine"]
    assert "/" not in adapters[0]["label"] and "on SmolLM2.gguf" in adapters[0]["label"]
    everyone = [e["id"] for e in catalog(config) if e["kind"] == "adapter"]
    assert sorted(everyone) == ["adapter:mine", "adapter:theirs"]
    assert not [e for e in catalog(config, adapters=False) if e["kind"] == "adapter"]
    spec = spec_for(adapters[0], "llama-cpp")
    assert (spec.backend, spec.source, spec.gguf_file) == (
        "transformers",
        "/models",
        "SmolLM2.gguf",
    )
    assert spec.adapter == str(tmp_path / "training" / "adapters" / "mine")


def test_the_model_tab_loads_only_its_owners_adapter(trained, tmp_path):
    import shutil

    from chat.errors import ChatStudioError
    from studio.access import Access, Caller
    from studio.config import AppConfig
    from studio.model_switch import ModelSwitcher

    base, adapter = trained
    saved = tmp_path / "training" / "adapters" / "a1"
    shutil.copytree(adapter, saved)
    meta = json.loads((saved / "adapter_meta.json").read_text())
    (saved / "adapter_meta.json").write_text(json.dumps({**meta, "owner": "user:alice"}))
    access = Access(b"secret", logins=True, admins={"alice", "bob"}, private=False)
    engine = ChatEngine(TransformersBackend(str(base), device="cpu"))
    switcher = ModelSwitcher(engine, AppConfig(data_dir=tmp_path, device="cpu"), access)
    bob = Caller(session="s-bob", user="bob", admin=True)
    assert not [e for e in switcher.entries(bob) if e["kind"] == "adapter"]
    with pytest.raises(ChatStudioError, match="Unknown model"):
        switcher.load(bob, "adapter:a1")
    alice = Caller(session="s-alice", user="alice", admin=True)
    loaded = switcher.load(alice, "adapter:a1", backend="llama-cpp")  # adapters: transformers
    assert (loaded["model"], loaded["backend"]) == ("base + adapter tiny", "transformers")
    assert reply(engine.backend).reply == ANSWER


# -- the command line: --adapter ----------------------------------------------------


def test_main_chats_with_an_adapter_and_explains_a_wrong_one(trained, tmp_path):
    import subprocess
    import sys

    from tests.conftest import free_port, spawn_main

    base, adapter = trained

    def run(*args):
        return subprocess.run(
            [sys.executable, "main.py", "--data-dir", str(tmp_path / "data"), *args],
            capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip

    out = run("--adapter", str(tmp_path / "nope"))
    assert out.returncode == 1 and "Adapter folder not found" in out.stderr
    out = run("--adapter", str(adapter), "--backend", "llama-cpp")
    assert out.returncode == 1 and "--backend transformers" in out.stderr
    assert "Traceback" not in out.stderr
    port = free_port()
    proc = spawn_main("--port", str(port), "--data-dir", str(tmp_path / "data"),
                      "--model", str(base), "--adapter", str(adapter))  # fmt: skip
    try:
        lines = []
        while not any(f"127.0.0.1:{port}" in line for line in lines[-1:]):
            line = proc.stdout.readline()
            assert line, "".join(lines)  # the app exited
            lines.append(line)
        assert "Model: base + adapter tiny | backend: transformers" in "".join(lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_adapters_own_tokenizer_sets_the_prompt_format(trained, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    base, adapter = trained
    folder = tmp_path / "with-tokenizer"
    shutil.copytree(adapter, folder)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = "{% for m in messages %}Q: {{ m['content'] }}\n{% endfor %}A:"
    tok.save_pretrained(folder)  # as the app's training saves it, with the template it used
    backend = TransformersBackend(str(base), device="cpu", adapter=str(folder))
    assert backend.render(PROMPT) == "Q: What is 7 plus 8?\nA:"
    (folder / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="does not load"):
        TransformersBackend(str(base), device="cpu", adapter=str(folder))
