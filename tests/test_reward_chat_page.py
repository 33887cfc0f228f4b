"""Issue 20 in a real Chromium: a reward model scores the Chat tab's replies and ranks its
candidates (best of n by reward); the Train tab's loss chart draws the eval loss, and its DPO
chart stays hidden for an SFT job.

The page chats with the bundled model (llama.cpp); training is pointed at a tiny
Llama-style folder made here (``--model``), so a job takes seconds.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from gradio_client import Client

from chat.errors import Cancelled
from tests.conftest import start_studio
from tests.helpers.browser import fill_number, open_tab, send, set_slider, text, wait_text
from tests.helpers.examples import PREFERENCE_JSONL as PAIRS
from tests.helpers.tiny_models import save_tiny

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

SFT = "\n".join(
    json.dumps({"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"})
    for i in range(12)
)
SCORE = re.compile(r"reward ([+-]\d+\.\d{3})")


@pytest.fixture(scope="module")
def studio(gguf_backend, tmp_path_factory):
    root = tmp_path_factory.mktemp("reward-chat")
    app = start_studio(gguf_backend, root / "data", model=save_tiny("llama", root / "tiny"))
    yield app
    app.close()


@pytest.fixture(scope="module")
def reward_model(studio):
    """A reward model trained through the API (this private app's one user owns it)."""
    client = Client(studio.demo.local_url, verbose=False)
    settings = {"kind": "reward", "max_steps": 10, "batch_size": 4, "eval_share": 0.0,
                "eval_every": 10, "learning_rate": 0.01}  # fmt: skip
    job = client.predict(source="jsonl", jsonl=PAIRS, settings=settings, api_name="/train")
    deadline = time.time() + 300
    while time.time() < deadline:
        status = client.predict(job=job["job"], api_name="/train_status")
        if status["state"] not in ("starting", "running"):
            break
        time.sleep(0.5)
    assert status["state"] == "finished" and status["adapter"], status
    return status["adapter"]


@pytest.fixture
def page(browser, studio):
    context = browser.new_context()
    page = context.new_page()
    page.goto(studio.demo.local_url)
    page.wait_for_selector("#message textarea")
    yield page
    context.close()


def box_scores(page) -> list[float]:
    """The rewards the candidate boxes show, in their order on the page."""
    return [float(s) for s in SCORE.findall(text(page, "#candidates"))]


def test_replies_show_their_reward_and_candidates_rank_by_it(reward_model, page):
    page.wait_for_function("!document.querySelector('#score-replies').disabled", timeout=30000)
    assert reward_model in page.locator("#reward-pick input").input_value()
    assert "No reward model" not in text(page, "#reward-note")
    set_slider(page, "num_return_sequences", 2)
    set_slider(page, "max_new_tokens", 8)
    send(page, "Say hello.")
    page.wait_for_function("document.querySelectorAll('#choice label').length === 2", timeout=90000)
    assert "reward" not in text(page, "#chatbot")

    page.locator("#score-replies").click()
    wait_text(page, "#reward-note", "Scored", reward_model, timeout=120000)
    shown = SCORE.search(text(page, "#chatbot"))  # in the reply's stats line
    assert shown, text(page, "#chatbot")

    page.locator("#rank-by-reward").click()
    wait_text(page, "#reward-note", "ranked by the reward model", timeout=120000)
    scores = box_scores(page)
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    first = page.locator("#candidates .candidate").first.inner_text()
    assert "best by reward" in first and "tokens" in first  # next to its own stats
    best = int(re.search(r"Candidate (\d)", first).group(1))
    assert page.locator("#choice label").first.inner_text().strip() == str(best)
    assert not page.locator(".toast-body").count(), page.locator(".toast-body").all_inner_texts()


def test_scoring_stops_when_asked_and_refuses_another_id(studio, reward_model):
    training = studio.ui.training
    caller = studio.access.caller(None)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        training.score_texts(caller, [{"role": "user", "content": "Hi"}], ["Hello"], None, stop)
    got, meta = training.score_texts(caller, [{"role": "user", "content": "Hi"}], ["Hello"])
    assert meta["id"] == reward_model and isinstance(got[0], float)
    with pytest.raises(Exception, match="No reward model 'nope' of yours"):
        training.score_texts(caller, [], ["Hello"], "nope")


def test_the_loss_chart_draws_the_eval_loss_and_no_dpo_chart_for_sft(page, tmp_path):
    rows = tmp_path / "sft.jsonl"
    rows.write_text(SFT, encoding="utf-8")
    open_tab(page, "Train")
    page.locator("#train-source").get_by_text("Upload JSONL").click()
    page.locator("#train-upload input[type=file]").set_input_files(str(rows))
    page.wait_for_timeout(500)  # the upload lands before Start reads it
    # The first evaluation comes well after the chart first draws (training loss only): the
    # chart used to keep the series of its first frame, and never drew the eval loss.
    fill_number(page, "train-max-steps", 300)
    fill_number(page, "train-batch-size", 2)
    fill_number(page, "train-eval-every", 150)
    fill_number(page, "train-eval-share", 0.25)
    page.locator("#train-start").click()
    wait_text(page, "#train-bar", "finished", "eval loss", timeout=180000)
    page.wait_for_function(
        "document.querySelector(\"#train-loss svg path[stroke='#f97316']\")", timeout=30000
    )  # the eval loss's line, in its colour
    legend = page.locator("#train-loss svg").first.text_content()
    assert "train loss" in legend and "eval loss" in legend
    assert not page.locator("#train-metrics").is_visible()  # an SFT job has no DPO metrics
