"""Inspect end to end: the named endpoints through gradio_client, and the tab in Chromium."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from tests.helpers.browser import send, wait_until_done

GREEDY = {"strategy": "greedy", "max_new_tokens": 16, "repetition_penalty": 1.0}
SHOTS = Path(__file__).resolve().parents[1] / "docs"


def test_chat_with_top_logprobs(client):
    out = client.predict(
        message="What is the capital of France?", settings=GREEDY, top_logprobs=5, api_name="/chat"
    )
    tokens = out["tokens"][0]
    assert "".join(t["text"] for t in tokens).strip() == out["reply"]
    assert all(t["id"] == t["top"][0]["id"] and len(t["top"]) == 5 for t in tokens)
    assert out["stats"]["confidence"]["mean_prob"] > 0
    plain = client.predict(message="Hi", settings=GREEDY, api_name="/chat")
    assert "tokens" not in plain  # only when asked for
    with pytest.raises(AppError, match="top_logprobs"):
        client.predict(message="Hi", settings=GREEDY, top_logprobs=50, api_name="/chat")


def test_chat_continues_from_a_chosen_token(client):
    first = client.predict(
        message="What is the capital of France?", settings=GREEDY, top_logprobs=3, api_name="/chat"
    )
    tokens = first["tokens"][0]
    alternative = tokens[0]["top"][1]
    branch = client.predict(
        message="What is the capital of France?",
        settings=GREEDY,
        top_logprobs=3,
        reply_prefix_ids=[alternative["id"]],
        api_name="/chat",
    )
    assert branch["tokens"][0][0]["id"] == alternative["id"]
    assert branch["reply"].startswith(alternative["text"].strip())


def test_next_token_endpoint(client):
    out = client.predict(text="The capital of France is", top_k=5, api_name="/next_token")
    assert out["candidates"][0]["text"] == " Paris" and len(out["candidates"]) == 5
    assert out["backend"] == "llama-cpp" and out["tokens"][-1]["text"] == " is"
    templated = client.predict(
        text="What is the capital of France?",
        template=True,
        reply_so_far="The capital of France is",
        api_name="/next_token",
    )
    assert templated["candidates"][0]["text"] == " Paris"
    assert any(t["text"] == "<|im_start|>" for t in templated["tokens"])


def test_perplexity_endpoint(client):
    natural = "The children played in the park until it was time to go home for dinner."
    shuffled = "dinner park home the go children time for to until played it the was in."
    a = client.predict(text=natural, api_name="/perplexity")
    b = client.predict(text=shuffled, api_name="/perplexity")
    assert b["perplexity"] > 3 * a["perplexity"]
    assert set(a) >= {"perplexity", "tokens", "mean_logprob", "burstiness", "entropy", "ai_score",
                      "method"}  # fmt: skip
    assert math.exp(-a["mean_logprob"]) == pytest.approx(a["perplexity"], rel=1e-3)


def test_attention_endpoint_explains_llama_cpp(client):
    with pytest.raises(AppError, match="--backend transformers"):
        client.predict(text="The cat sat.", api_name="/attention")


@pytest.fixture(scope="module")
def tf_client(smol_transformers, tmp_path_factory):
    """The app on the transformers backend (the same GGUF, dequantized)."""
    from gradio_client import Client

    from tests.conftest import start_studio

    studio = start_studio(smol_transformers, tmp_path_factory.mktemp("tf"))
    yield Client(studio.demo.local_url, verbose=False)
    studio.close()


def test_attention_endpoint_on_transformers(tf_client):
    out = tf_client.predict(text="The cat sat on the mat.", layer=-1, api_name="/attention")
    n = len(out["tokens"])
    assert out["layers"] == 30 and out["layer"] == 29 and out["head"] is None
    assert len(out["weights"]) == n and all(len(r) == n for r in out["weights"])
    assert all(sum(r) == pytest.approx(1.0, abs=1e-3) for r in out["weights"])
    head = tf_client.predict(text="The cat sat.", layer=0, head=1, api_name="/attention")
    assert head["head"] == 1 and head["layer"] == 0
    with pytest.raises(AppError, match="layer"):
        tf_client.predict(text="The cat sat.", layer=99, api_name="/attention")


@pytest.mark.parametrize(
    "values",
    [{"layer": "abc"}, {"layer": 99999}, {"layer": 0, "head": "x"}, {"layer": 0, "head": 99}],
)
def test_attention_with_bad_numbers_gets_one_sentence(tf_client, values):
    field = "head" if "head" in values else "layer"
    with pytest.raises(AppError) as err:
        tf_client.predict(text="The cat sat.", api_name="/attention", **values)
    message = str(err.value)
    assert f"{field}:" in message and "not supported" not in message, message


def test_beam_comparison_on_transformers(tf_client):
    rows = tf_client.predict(
        message="Say hi.",
        strategies=[
            {"label": "greedy", "settings": {"strategy": "greedy", "repetition_penalty": 1.0}},
            {"label": "classic", "settings": {"beam_width": 5, "repetition_penalty": 1.2}},
        ],
        max_new_tokens=10,
        api_name="/compare",
    )
    assert [r["label"] for r in rows] == ["greedy", "classic"]
    assert all("unavailable" not in r and r["logprob"] < 0 and r["text"] for r in rows)


def test_model_and_compare_endpoints(client):
    model = client.predict(api_name="/model")
    assert model["capabilities"]["features"]["logprobs"] is True
    assert "--backend transformers" in model["capabilities"]["features"]["attention"]
    rows = client.predict(message="Say hi.", max_new_tokens=12, api_name="/compare")
    labels = [r["label"] for r in rows]
    assert labels[0] == "greedy" and "unavailable" in rows[1]  # no beam search on llama.cpp
    assert all(r["logprob"] < 0 for r in rows if "unavailable" not in r)


def test_a_comparison_whose_client_left_is_stopped(app, caplog):
    """A /compare that would write for minutes, its reader gone: the tool's job is stopped
    (``ChatUI.job``: Stop, or nobody listening) and says so in the log."""
    import logging
    import time

    import httpx

    caplog.set_level(logging.INFO, logger="chat_studio")
    never_ends = {"strategy": "sample", "seed": 3, "temperature": 2.0, "top_p": 1.0, "top_k": 0}
    strategies = [{"label": f"long {i}", "settings": never_ends} for i in range(4)]
    r = httpx.post(
        app[1] + "gradio_api/call/v2/compare",
        json={
            "message": "Write a very long story.",
            "strategies": strategies,
            "max_new_tokens": 2048,
        },  # fmt: skip
        timeout=30,
    )
    assert r.status_code == 200, r.text
    url = app[1] + f"gradio_api/call/v2/compare/{r.json()['event_id']}"
    try:  # start reading, then hang up
        with httpx.stream("GET", url, timeout=httpx.Timeout(30, read=2)) as stream:
            for _ in stream.iter_lines():
                pass
    except httpx.ReadTimeout:
        pass
    deadline = time.monotonic() + 120  # a comparison that ran to its end logs no "Stopped"
    while not any("refused: Stopped" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the comparison went on after its client left"
        time.sleep(0.5)


@pytest.mark.browser
def test_inspect_tab_in_the_browser(page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    send(page, "What is the capital of France?")
    wait_until_done(page)
    page.get_by_role("tab", name="Inspect").click()
    tokens = page.locator("#reply-tokens .token")
    tokens.first.wait_for(timeout=20000)
    assert tokens.count() >= 3
    assert "mean token probability" in page.locator("#reply-confidence").inner_text()
    tokens.nth(2).click()
    page.wait_for_function(
        "document.querySelector('#token-alternatives').innerText.includes('everything else')",
        timeout=20000,
    )
    bars = page.locator("#token-alternatives").inner_text()
    assert "✓" in bars and "after the sampler" in bars
    # The next-token explorer, stepped twice.
    page.get_by_text("Next-token explorer").click()
    page.locator("#nt-predict").click()
    page.wait_for_function(
        "document.querySelector('#nt-bars').innerText.includes('Paris')", timeout=30000
    )
    box = page.locator("#nt-text textarea")
    page.locator("#nt-append-top").click()
    page.wait_for_function(
        "document.querySelector('#nt-text textarea').value.endsWith(' Paris')", timeout=30000
    )
    page.wait_for_function(  # the prediction after " Paris" is in
        "document.querySelector('#nt-tokens').innerText.includes('Paris')", timeout=30000
    )
    page.locator("#nt-append-top").click()
    page.wait_for_function(
        "document.querySelector('#nt-text textarea').value.length > 'The capital of France is "
        "Paris'.length",
        timeout=30000,
    )
    assert box.input_value().startswith("The capital of France is Paris")
    page.locator("#nt-undo").click()
    page.wait_for_function(
        "document.querySelector('#nt-text textarea').value.endsWith(' Paris')", timeout=30000
    )
    if os.environ.get("CHAT_STUDIO_SCREENSHOTS"):
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / "inspect.png"), full_page=True)
