"""LLM cascade with two real models: the bundled one in the app, and a llama_cpp.server
child standing in for the bigger remote model."""

from __future__ import annotations

from gradio_client import Client

from tests.conftest import start_studio

QUESTION = "What is the capital of France?"
GREEDY = {"strategy": "greedy", "max_new_tokens": 16, "repetition_penalty": 1.0}


def ask(backend, data, server, threshold):
    studio = start_studio(backend, data, cascade_base_url=server.url, cascade_threshold=threshold)
    try:
        return Client(studio.demo.local_url, verbose=False).predict(
            message=QUESTION, settings=GREEDY, api_name="/chat"
        )
    finally:
        studio.close()


def test_an_unsure_local_answer_goes_to_the_remote_model(gguf_backend, llama_server, tmp_path):
    out = ask(gguf_backend, tmp_path / "a", llama_server, threshold=0.99)
    cascade = out["stats"]["cascade"]
    assert cascade["escalated"] and cascade["local_mean_prob"] < 0.99
    assert "< 0.99" in cascade["reason"] and cascade["local_reply"]
    assert out["stats"]["answered_by"].endswith(f"(remote {llama_server.url})")
    assert out["stats"]["backend"] == "openai" and out["reply"]
    assert any("was unsure" in n and "answered instead" in n for n in out["notices"])


def test_a_confident_local_answer_stays(gguf_backend, llama_server, tmp_path):
    out = ask(gguf_backend, tmp_path / "b", llama_server, threshold=0.0)
    cascade = out["stats"]["cascade"]
    assert not cascade["escalated"] and ">= 0.00" in cascade["reason"]
    assert out["stats"]["backend"] == "llama-cpp"
    assert out["stats"]["answered_by"].startswith("SmolLM2-135M-Instruct.Q4_1.gguf (cpu)")
    assert "Paris" in out["reply"] and "tokens" not in out  # token lists only when asked for
