"""Where the llama.cpp model runs: in the app's process, or in a child that never meets torch."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from gradio_client import Client, handle_file

from chat.backends.subprocess_backend import SubprocessBackend, WorkerDied
from chat.engine import ChatEngine, TurnRequest
from chat.inspection import Inspector
from chat.models import choose_runtime, default_model_path, llama_gpu_offload
from chat.settings import DecodingSettings
from tests.security.conftest import start_app

GREEDY = DecodingSettings(strategy="greedy", max_new_tokens=12, repetition_penalty=1.0)
SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]


def test_runtime_choice():
    assert choose_runtime("in-process", "auto") == "in-process"
    assert choose_runtime("subprocess", "cpu") == "subprocess"
    assert choose_runtime("auto", "cpu") == "in-process"
    # auto: a child exactly when llama-cpp-python could put the model on a GPU
    assert choose_runtime("auto", "auto") == ("subprocess" if llama_gpu_offload() else "in-process")


@pytest.fixture(scope="module")
def worker():
    backend = SubprocessBackend(path=str(default_model_path()), n_ctx=2048)
    yield backend
    backend.close()


def test_the_child_answers_like_the_model_in_process(worker, gguf_backend):
    assert worker.info.device.endswith("own process") and worker.pid != os.getpid()
    here = ChatEngine(gguf_backend).stream_turn(
        TurnRequest("What is the capital of France?", [], SYSTEM, GREEDY)
    )
    there = ChatEngine(worker).stream_turn(
        TurnRequest("What is the capital of France?", [], SYSTEM, GREEDY, top_logprobs=3)
    )
    *_, a = here
    *_, b = there
    assert a.reply == b.reply and len(b.tokens[0]) == b.stats["completion_tokens"]
    out = Inspector(ChatEngine(worker)).next_token("The capital of France is", 3)
    assert out["candidates"][0]["text"] == " Paris"


@pytest.mark.model
def test_a_dead_child_is_restarted_and_the_request_says_so(worker):
    engine = ChatEngine(worker)
    settings = DecodingSettings(strategy="sample", seed=1, max_new_tokens=1500)
    turn = engine.stream_turn(TurnRequest("Write a very long story.", [], SYSTEM, settings))
    next(turn)
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerDied, match="restarted"):
        for _ in turn:
            pass
    deadline = time.time() + 60
    while time.time() < deadline and (worker.restarts < 1 or worker.proc.poll() is not None):
        time.sleep(0.1)
    *_, again = engine.stream_turn(TurnRequest("Hi", [], SYSTEM, GREEDY))
    assert again.reply and worker.restarts >= 1


@pytest.mark.model
@pytest.mark.slow
def test_the_app_serves_chat_and_documents_with_the_model_in_a_child(tmp_path):
    app = start_app(tmp_path / "data", "--runtime", "subprocess")
    try:
        client = Client(app.url, verbose=False)
        assert client.predict(api_name="/model")["device"].endswith("own process")
        doc = tmp_path / "harbour.md"
        doc.write_text("# Harbour\n\nThe ferry to Brindle Isle leaves at half past nine.")
        added = client.predict(files=[handle_file(str(doc))], api_name="/ingest")
        assert added[0]["status"] == "added"  # the embedder (torch) loaded in the app
        out = client.predict(
            message="When does the ferry to Brindle Isle leave?",
            use_rag=True,
            settings={"strategy": "greedy", "max_new_tokens": 24},
            api_name="/chat",
        )
        assert out["sources"][0]["source"] == "harbour.md" and out["reply"]
        app_proc = psutil.Process(app.proc.pid)
        workers = [p for p in app_proc.children(recursive=True)
                   if "chat.backends.worker" in " ".join(p.cmdline())]  # fmt: skip
        assert len(workers) == 1
        assert "torch" not in " ".join(m.path for m in workers[0].memory_maps())
    finally:
        app.stop()
    workers[0].wait(timeout=15)  # the child went with the app


def test_llama_cpp_uses_a_thread_per_physical_core(gguf_backend):
    from chat.backends.llama_cpp_backend import physical_cores

    assert gguf_backend.n_threads == physical_cores()
    assert gguf_backend.llm.context_params.n_threads_batch >= gguf_backend.n_threads


def test_the_shipped_llama_cpp_build_has_no_openmp_and_no_llamafile():
    """requirements.txt builds llama.cpp without OpenMP (torch's libgomp, shared in one
    process, made its barriers sleep) and without llamafile sgemm (replies depended on
    how a prompt was batched); a build that ignored those flags would pass unnoticed."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info
    assert "OPENMP = 1" not in info and "LLAMAFILE = 1" not in info
