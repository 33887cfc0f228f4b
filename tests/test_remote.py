"""An OpenAI-compatible engine as the backend: a real llama_cpp.server, driven through the app.

Chat, streaming, Stop, candidates, token probabilities, errors and recovery,
and generations that run at once (the server batches; the app must not queue
them behind one lock).
"""

from __future__ import annotations

import threading
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from chat.backends.openai_backend import EngineUnavailable, OpenAIBackend
from tests.conftest import free_port, start_studio
from tests.servers import LlamaServer, Tap

GREEDY = {"strategy": "greedy", "max_new_tokens": 16, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def tap(llama_server):
    t = Tap(llama_server.port)
    yield t
    t.close()


@pytest.fixture(scope="module")
def remote(tap, tmp_path_factory):
    backend = OpenAIBackend(tap.url)
    studio = start_studio(backend, tmp_path_factory.mktemp("remote"))
    yield studio, Client(studio.demo.local_url, verbose=False)
    studio.close()


def test_the_engine_answers_and_reports_itself(remote):
    studio, client = remote
    assert studio.engine.concurrency == 8  # a remote engine batches: eight at once by default
    out = client.predict(
        message="What is the capital of France?", settings=GREEDY, api_name="/chat"
    )
    assert "Paris" in out["reply"]
    st = out["stats"]
    assert st["backend"] == "openai" and st["model"].endswith(".gguf")
    assert st["device"].startswith("remote http://127.0.0.1")
    assert 0 < st["completion_tokens"] <= 16 and st["tokens_per_s"] > 0 and st["ttft_s"] > 0
    model = client.predict(api_name="/model")
    assert model["backend"] == "openai"
    assert "OpenAI protocol" in model["capabilities"]["features"]["attention"]


def test_streaming_and_token_probabilities(remote):
    _, client = remote
    job = client.submit(
        message="Count from one to ten.",
        settings={"strategy": "greedy", "max_new_tokens": 40},
        top_logprobs=3,
        api_name="/chat",
    )
    final = job.result()
    assert len(job.outputs()) > 3
    tokens = final["tokens"][0]
    assert "".join(t["text"] for t in tokens).strip() == final["reply"]
    assert all(len(t["top"]) == 3 and t["top"][0]["logprob"] >= t["top"][1]["logprob"]
               for t in tokens)  # fmt: skip


def test_several_candidates(remote):
    _, client = remote
    settings = {"strategy": "sample", "num_return_sequences": 2, "seed": 3, "max_new_tokens": 12,
                "temperature": 1.2}  # fmt: skip
    out = client.predict(message="Write a one-line poem.", settings=settings, api_name="/chat")
    assert len(out["candidates"]) == 2 and all(out["candidates"])
    assert len(out["stats"]["candidates"]) == 2


def test_beam_search_is_refused_with_a_reason(remote):
    _, client = remote
    with pytest.raises(AppError, match="beam"):
        client.predict(message="Hi", settings={"beam_width": 3}, api_name="/chat")


def test_stop_closes_the_stream_so_the_server_stops(remote, tap):
    _, client = remote
    before = len(tap.events)
    job = client.submit(
        message="Write a very long story about a dragon.",
        settings={"strategy": "sample", "seed": 1, "max_new_tokens": 1500},
        api_name="/chat",
    )
    deadline = time.time() + 30
    while time.time() < deadline and len(job.outputs()) < 5:
        time.sleep(0.05)
    job.cancel()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and not [e for e in tap.events[before:] if e[1] == "closed"]:
        time.sleep(0.05)
    closed = [e for e in tap.events[before:] if e[1] == "closed"]
    assert closed and closed[0][0] - t0 < 5  # the HTTP stream to the server was closed
    out = client.predict(message="Say hi.", settings=GREEDY, api_name="/chat")
    assert out["reply"]


def test_three_generations_run_at_once_and_none_is_cut_off(remote, tap):
    _, client = remote
    before = len(tap.events)
    settings = {"strategy": "greedy", "max_new_tokens": 48, "repetition_penalty": 1.0}
    jobs = [
        client.submit(message=f"Tell me a fact about the number {n}.", settings=settings,
                      api_name="/chat")
        for n in (3, 7, 11)
    ]  # fmt: skip
    results = [job.result(timeout=180) for job in jobs]
    assert all(r["reply"] and r["stats"]["finish_reason"] in ("stop", "length") for r in results)
    window = Tap.__new__(Tap)
    window.events = tap.events[before:]
    assert window.most_at_once() >= 2  # the server saw the second before the first finished


def test_an_engine_that_is_down_is_a_clear_error_and_is_used_once_back(tmp_path):
    port = free_port()
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", timeout=10)
    assert "cannot be reached" in backend.startup_error
    assert backend.capabilities.startup_error == backend.startup_error  # what main.py prints
    assert backend.capabilities.remote
    studio = start_studio(backend, tmp_path / "data")
    try:
        client = Client(studio.demo.local_url, verbose=False)
        with pytest.raises(AppError, match="cannot be reached"):
            client.predict(message="Hi", settings=GREEDY, api_name="/chat")
        assert client.predict(api_name="/personas")  # the app keeps serving
        server = LlamaServer(port=port)
        try:
            out = client.predict(message="Say hi.", settings=GREEDY, api_name="/chat")
            assert out["reply"] and out["stats"]["model"].endswith(".gguf")
            assert out["stats"]["remote"] and backend.capabilities.startup_error is None
        finally:
            server.stop()
    finally:
        studio.close()


def test_garbage_from_the_engine_is_a_clear_error(tmp_path):
    import http.server

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self._junk()

        def do_POST(self):  # noqa: N802
            self._junk()

        def _junk(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"<html>not json</html>")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{httpd.server_address[1]}/v1", timeout=5)
        with pytest.raises(EngineUnavailable, match="not an OpenAI-compatible"):
            backend.models()
    finally:
        httpd.shutdown()
