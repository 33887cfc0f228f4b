"""Explain end to end: the named endpoints through gradio_client, and the views in Chromium."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from tests.helpers.browser import send, wait_until_done

pytestmark = pytest.mark.model
GREEDY = {"strategy": "greedy", "max_new_tokens": 12, "repetition_penalty": 1.0}
FACT_QUESTION = (
    "The weather was cold that week. Mira's cat is named Pumpkin. Mira drinks tea every "
    "morning. What is the name of Mira's cat?"
)


def test_attribute_a_chat_reply_over_parts(client):
    turn = client.predict(message=FACT_QUESTION, settings=GREEDY, top_logprobs=1, api_name="/chat")
    ids = [t["id"] for t in turn["tokens"][0]]
    out = client.predict(
        messages=turn["prompt_messages"], reply_ids=ids, level="sentences",
        method="ablation", api_name="/attribute",
    )  # fmt: skip
    rows = [s for s in out["segments"] if s["attribution"] is not None]
    assert {s["kind"] for s in rows} == {"system", "message"}
    assert out["target"]["kind"] == "reply" and out["model_calls"] >= len(rows) + 1
    assert "".join(s["text"] for s in out["segments"]).count("Pumpkin") == 1


def test_attribute_bad_input_is_one_sentence(client):
    for values, expected in (
        ({"text": "Hi there.", "level": "tokens", "method": "ablation"}, "gradient method"),
        ({"text": "Hi there.", "method": "shapley"}, "method"),
        ({"text": "Hi there.", "reply_ids": [10**9], "token": 0}, "not a token of this model"),
        ({"text": "x" * 9000}, "text"),
    ):
        with pytest.raises(AppError, match=expected) as info:
            client.predict(**values, api_name="/attribute")
        assert "Traceback" not in str(info.value) and "pydantic" not in str(info.value)


def test_views_that_need_internals_say_why_on_llama_cpp(client):
    for api in ("/logit_lens", "/neurons"):
        with pytest.raises(AppError, match="transformers backend in the Model tab"):
            client.predict(text="The cat sat.", api_name=api)


def test_calibration_endpoint_is_cached(client):
    out = client.predict(
        question_set="capitals", scoring="cloze", limit=20, api_name="/calibration"
    )
    assert out["questions"] == 20 and out["accuracy"] > out["chance"]
    assert 0 <= out["ece"] <= 1 and out["cached"] is False
    again = client.predict(
        question_set="capitals", scoring="cloze", limit=20, api_name="/calibration"
    )
    assert again["cached"] is True and again["accuracy"] == out["accuracy"]
    assert "low_confidence_marker" in out["threshold"]
    with pytest.raises(AppError, match="question_set: input should be"):
        client.predict(question_set="trivia", api_name="/calibration")


@pytest.fixture(scope="module")
def tf_app(smol_transformers, tmp_path_factory):
    """The app on the transformers backend (the same GGUF, dequantized)."""
    from tests.conftest import start_studio

    studio = start_studio(smol_transformers, tmp_path_factory.mktemp("tf-explain"))
    yield studio.demo.local_url
    studio.close()


@pytest.fixture(scope="module")
def tf_client(tf_app):
    from gradio_client import Client

    return Client(tf_app, verbose=False)


def test_logit_lens_neurons_and_token_attribution_on_transformers(tf_client):
    lens = tf_client.predict(text="The capital of France is", api_name="/logit_lens")
    assert lens["layers"] == 30 and len(lens["cells"]) == 30
    assert lens["answer"]["text"] == " Paris" and lens["answer"]["by_layer"][-1] > 0.1
    view = tf_client.predict(text="Paris is the capital of France.", api_name="/neurons")
    assert view["skipped_first"] == 1 and view["tokens"][0]["position"] == 1
    neuron = tf_client.predict(layer=3, index=7, text="Paris is lovely.", api_name="/neuron")
    assert neuron["top"] and neuron["text"][0]["text"]
    with pytest.raises(AppError, match="layer"):
        tf_client.predict(layer=99, index=0, api_name="/neuron")
    with pytest.raises(AppError, match="--cascade-base-url"):
        tf_client.predict(layer=3, index=7, explain=True, api_name="/neuron")
    grad = tf_client.predict(
        text="The capital of France is", reply=" Paris", token=0, level="tokens",
        method="input_x_gradient", api_name="/attribute",
    )  # fmt: skip
    assert len(grad["attributions"]) == len(grad["tokens"])


@pytest.mark.browser
def test_attribution_and_logit_lens_in_the_browser(browser, tf_app):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(tf_app)
    page.wait_for_selector("#message textarea")
    send(page, FACT_QUESTION)
    wait_until_done(page, timeout=120000)
    page.get_by_role("tab", name="Inspect").click()
    tokens = page.locator("#reply-tokens .token")
    tokens.first.wait_for(timeout=30000)
    tokens.nth(1).click()
    page.wait_for_function(
        "document.querySelector('#token-alternatives').innerText.includes('✓')", timeout=30000
    )
    page.get_by_text("Why this token? (attribution)").click()
    page.locator("#attr-go").click()
    page.wait_for_function(
        "document.querySelector('#attr-summary').innerText.includes('Pushed toward it most')",
        timeout=120000,
    )
    assert page.locator("#attr-view .attr-seg").count() >= 3
    assert "red" in page.locator("#attr-view").inner_text()
    page.get_by_text("Logit lens: the answer forming layer by layer").click()
    page.locator("#lens-go").click()
    page.wait_for_function(
        "document.querySelector('#lens-view').innerText.includes('Paris')", timeout=60000
    )
    assert page.locator("#lens-view tbody tr").count() == 30
    context.close()


def test_explain_a_neuron_with_a_remote_engine(smol_transformers, llama_server, tmp_path):
    """ "Let AI explain AI": the engine explains the neuron; the line is scored by simulation."""
    from gradio_client import Client

    from tests.conftest import start_studio

    studio = start_studio(smol_transformers, tmp_path, cascade_base_url=llama_server.url)
    try:
        client = Client(studio.demo.local_url, verbose=False)
        out = client.predict(layer=3, index=7, explain=True, api_name="/neuron")
        found = out["explanation"]
        assert found["explanation"].strip() and found["scored_tokens"] > 0
        assert -1.0 <= found["score"] <= 1.0 and found["neuron"] == 7
    finally:
        studio.close()
