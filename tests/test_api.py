"""End to end: the real app and model, driven through gradio_client's /chat.

What does not need the model's words (input validation, the personas list)
runs on the same app serving the stand-in model (``standin_client``).
"""

import pytest
from gradio_client.exceptions import AppError

from tests.helpers.examples import HF_PIPELINE_EXAMPLE

GREEDY = {"strategy": "greedy", "max_new_tokens": 24}
KEYS = {"reply", "candidates", "sources", "prompt_messages", "stats", "settings", "notices"}
STAT_KEYS = {
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_s",
    "ttft_s",
    "model",
    "backend",
    "device",
    "seed",
    "dropped_turns",
}


def chat(client, message, **kw):
    return client.predict(message=message, api_name="/chat", **kw)


def test_chat_returns_the_documented_dict(client):
    out = chat(
        client,
        "What is the capital of France?",
        history=[],
        persona="assistant",
        settings=GREEDY,
        use_rag=False,
    )
    assert KEYS <= set(out) and STAT_KEYS <= set(out["stats"])
    assert "Paris" in out["reply"]
    assert out["candidates"] == [out["reply"]] and out["sources"] == []
    sent = out["prompt_messages"]
    assert sent[0]["role"] == "system" and sent[-1] == {
        "role": "user",
        "content": "What is the capital of France?",
    }
    st = out["stats"]
    assert st["backend"] == "llama-cpp" and st["device"] == "cpu"
    assert st["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert 0 < st["completion_tokens"] <= 24 and st["prompt_tokens"] > 10
    assert st["ttft_s"] > 0 and st["tokens_per_s"] > 0 and st["dropped_turns"] == 0


def test_greedy_is_reproducible_and_seeded_sampling_too(client):
    a = chat(client, "Name a colour.", settings=GREEDY)
    b = chat(client, "Name a colour.", settings=GREEDY)
    assert a["reply"] == b["reply"]
    s = {"strategy": "sample", "temperature": 1.0, "seed": 1234, "max_new_tokens": 30}
    c, d = (
        chat(client, "Tell me a story.", settings=s),
        chat(client, "Tell me a story.", settings=s),
    )
    assert c["reply"] == d["reply"] and c["stats"]["seed"] == 1234


def test_history_is_sent_in_order(client):
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
    ]
    out = chat(client, "What is my name?", history=history, settings=GREEDY)
    assert out["prompt_messages"][1:] == history + [{"role": "user", "content": "What is my name?"}]


def test_several_candidates(client):
    out = chat(
        client,
        "Write a one-line poem.",
        settings={"strategy": "sample", "num_return_sequences": 3, "seed": 5, "max_new_tokens": 20},
    )
    assert len(out["candidates"]) == 3 and out["reply"] == out["candidates"][0]
    assert len(set(out["candidates"])) > 1


def test_hugging_face_style_settings(client):
    out = chat(
        client,
        "Hi",
        settings=HF_PIPELINE_EXAMPLE,
    )
    st = out["stats"]
    assert out["settings"]["strategy"] == "sample"
    assert st["prompt_tokens"] + st["completion_tokens"] <= 150


def test_long_history_is_trimmed_not_an_error(client):
    history = []
    for i in range(80):
        history += [
            {"role": "user", "content": f"Question {i}: " + "tell me more " * 15},
            {"role": "assistant", "content": f"Answer {i}: " + "here is more " * 15},
        ]
    out = chat(client, "Summarise.", history=history, settings=GREEDY)
    st = out["stats"]
    assert st["dropped_turns"] > 0
    assert st["prompt_tokens"] + 24 <= 2048
    assert out["prompt_messages"][-1]["content"] == "Summarise."


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"settings": {"temperature": -1}}, "temperature"),
        ({"settings": {"top_p": 2}}, "top_p"),
        ({"settings": {"beam_width": 4}}, "beam"),
        ({"settings": {"temprature": 1}}, "unknown setting"),
        ({"persona": "nobody"}, "valid personas are: assistant"),
        ({"history": [{"role": "wizard", "content": "x"}]}, "history[0].role"),
    ],
)
def test_bad_input_comes_back_as_a_named_error(client, kwargs, expected):
    with pytest.raises(AppError) as err:
        chat(client, "Hello", **kwargs)
    assert expected in str(err.value)


def test_empty_message_is_refused(standin_client):
    with pytest.raises(AppError, match="message is empty"):
        chat(standin_client, "   ")


def test_streaming_through_submit(client):
    job = client.submit(
        message="Count from one to ten.",
        settings={"strategy": "greedy", "max_new_tokens": 40},
        api_name="/chat",
    )
    final = job.result()
    partials = job.outputs()
    # the first token comes before the end (the rest in bursts, ten a second)
    assert len(partials) >= 2 and len(partials[0]["reply"]) < len(final["reply"])
    assert final["reply"].startswith(partials[0]["reply"])


def test_personas_endpoint(standin_client):
    rows = standin_client.predict(api_name="/personas")
    assert {
        "id": "assistant",
        "name": "Assistant",
        "source": "shipped",
        "error": None,
    }.items() <= rows[0].items()


def test_concurrent_requests_wait_their_turn(client):
    """One generation at a time per model: concurrent callers queue and all get answers."""
    settings = {"strategy": "greedy", "max_new_tokens": 16}
    jobs = [
        client.submit(message=f"Say the number {i}.", settings=settings, api_name="/chat")
        for i in range(3)
    ]
    results = [job.result(timeout=120) for job in jobs]
    assert all(r["reply"] and r["stats"]["completion_tokens"] > 0 for r in results)
