"""Issue 17, "Nothing lost, nothing false": what the page and the API say matches what the
model did (after-sampler values, settings in force, a candidate's own figures, attention,
retrieval markers). Real model, real app, Debian's Chromium or gradio_client.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.helpers.browser import (
    open_settings,
    open_tab,
    send,
    set_slider,
    wait_for_text,
    wait_until_done,
)

BALANCED = {"strategy": "sample", "temperature": 0.7, "top_p": 0.9, "top_k": 40,
            "repetition_penalty": 1.1}  # fmt: skip
ROWS_JS = """(sel) => [...document.querySelectorAll(sel + ' .tok-row:not(.tok-head)')].map(r =>
  [...r.children].map(c => c.innerText.trim()))"""


def bar_rows(page, selector: str) -> dict[str, str]:
    """``{token: after-the-sampler label}`` of a bar chart (the ✓ mark dropped)."""
    rows = page.evaluate(ROWS_JS, selector)
    return {r[0].removesuffix(" ✓"): r[2] for r in rows if r[0] != "everything else"}


def number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


# -- 7: every alternative's after-sampler value, the same as the explorer's -------------------


def test_7_reply_alternatives_and_the_explorer_agree_through_the_api(client):
    out = client.predict(
        message="Name a colour.",
        settings={**BALANCED, "max_new_tokens": 4, "seed": 1},
        top_logprobs=10,
        api_name="/chat",
    )
    first = out["tokens"][0][0]
    explorer = client.predict(
        text="Name a colour.", top_k=10, settings=BALANCED, template=True, api_name="/next_token"
    )
    by_id = {c["id"]: c for c in explorer["candidates"]}
    assert [a["id"] for a in first["top"]] == list(by_id)
    for alt in first["top"]:
        seen = by_id[alt["id"]]
        assert alt["kept"] == seen["kept"], alt
        if seen["kept"]:
            assert math.exp(alt["sampler_logprob"]) == pytest.approx(seen["sampler_prob"], abs=1e-4)
    assert sum(a["kept"] for a in first["top"]) >= 2  # top-p 0.9 keeps more than the pick


@pytest.mark.browser
def test_7_removed_by_the_sampler_only_where_the_sampler_removed_it(page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    set_slider(page, "max_new_tokens", 4)  # the Balanced preset (top-p 0.9) otherwise
    # The explorer first, while the chat is empty: the same prompt the first reply token sees.
    open_tab(page, "Inspect")
    page.get_by_text("Next-token explorer").click()
    page.locator("#nt-template input").check()
    page.locator("#nt-text textarea").fill("Name a colour.")
    page.locator("#nt-predict").click()
    page.wait_for_function(
        "document.querySelector('#nt-bars').innerText.includes('everything else')", timeout=30000
    )
    explorer = bar_rows(page, "#nt-bars")
    open_tab(page, "Chat")
    send(page, "Name a colour.")
    wait_until_done(page, timeout=120000)
    open_tab(page, "Inspect")
    page.locator("#reply-tokens .token").first.click()
    page.wait_for_function(
        "document.querySelector('#token-alternatives').innerText.includes('everything else')",
        timeout=20000,
    )
    reply = bar_rows(page, "#token-alternatives")
    kept = [t for t, label in reply.items() if number(label) is not None]
    assert len(kept) >= 2, reply  # not only the chosen token
    shared = set(reply) & set(explorer)
    assert len(shared) >= 5
    for token in shared:
        a, b = number(reply[token]), number(explorer[token])
        assert (a is None) == (b is None), (token, reply[token], explorer[token])
        assert a is None or a == pytest.approx(b, abs=0.002), token


# -- 8: settings the strategy ignores are greyed out and not recorded -------------------------


def test_8_a_greedy_reply_records_only_what_applied(client):
    out = client.predict(
        message="Hi", settings={"strategy": "greedy", "max_new_tokens": 4}, api_name="/chat"
    )
    assert out["settings"]["strategy"] == "greedy"
    assert not {"temperature", "top_p", "top_k", "num_beams"} & set(out["settings"])
    sampled = client.predict(message="Hi", settings={"max_new_tokens": 4}, api_name="/chat")
    assert {"temperature", "top_p", "top_k"} <= set(sampled["settings"])
    assert "num_beams" not in sampled["settings"]


@pytest.mark.browser
def test_8_controls_the_strategy_ignores_are_greyed_out(page):
    open_settings(page)

    def disabled(name):
        return page.locator(f"#setting-{name} input[type=number]").is_disabled()

    assert not disabled("temperature") and disabled("num_beams")  # Balanced: sampling
    page.locator("#strategy label", has_text="greedy").click()
    page.wait_for_function(
        "document.querySelector('#setting-temperature input[type=number]').disabled"
    )
    assert disabled("top_p") and disabled("top_k") and disabled("num_beams")
    assert not disabled("repetition_penalty") and not disabled("max_new_tokens")
    set_slider(page, "max_new_tokens", 4)
    send(page, "Hi")
    wait_until_done(page, timeout=120000)
    with page.expect_download() as download:
        page.locator("#export").click()
    data = json.loads(open(download.value.path(), encoding="utf-8").read())
    settings = data["messages"][-1]["meta"]["settings"]
    assert settings["strategy"] == "greedy" and "temperature" not in settings
    page.locator("#strategy label", has_text="sample").click()
    page.wait_for_function(
        "!document.querySelector('#setting-temperature input[type=number]').disabled"
    )


# -- 9: a picked candidate shows its own figures ------------------------------------------------


@pytest.mark.browser
def test_9_a_picked_candidate_shows_its_own_tokens_speed_and_mean(page):
    set_slider(page, "num_return_sequences", 3)
    set_slider(page, "max_new_tokens", 6)
    send(page, "Name an animal.")
    page.wait_for_function(
        "document.querySelectorAll('#choice label').length === 3", timeout=240000
    )
    text = page.locator("#candidates").inner_text()
    heads = {  # "Candidate k · N tokens · S tok/s · log-probability L (mean M per token)"
        int(m[1]): m[0] for m in re.finditer(r"^Candidate (\d) · .*$", text, re.MULTILINE)
    }
    assert sorted(heads) == [1, 2, 3], text
    assert all("tok/s" in h and "(mean" in h and "per token" in h for h in heads.values()), heads
    own = [int(heads[k].split(" · ")[1].split()[0]) for k in (1, 2, 3)]
    assert "3 candidates" in page.locator("#stats-line").inner_text()
    page.locator("#choice label").nth(1).click()
    page.wait_for_function(
        "document.querySelector('#stats-line').innerText.includes('candidate 2/3')",
        timeout=10000,
    )
    line = page.locator("#stats-line").inner_text()
    assert f"{own[1]} tokens" in line and "per token" in line, (line, own)
    assert f"{sum(own)} tokens" not in line or sum(own) == own[1]


# -- 10: attention starts at the average, layers numbered once ---------------------------------


@pytest.fixture(scope="module")
def tf_app(smol_transformers, tmp_path_factory):
    """The app on the transformers backend (the bundled GGUF, dequantized)."""
    from tests.conftest import start_studio

    studio = start_studio(smol_transformers, tmp_path_factory.mktemp("tf-truth"))
    yield studio.demo.local_url
    studio.close()


@pytest.mark.browser
def test_10_the_first_heatmap_is_the_average_and_layers_count_from_0(browser, tf_app):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(tf_app)
    page.wait_for_selector("#message textarea")
    open_tab(page, "Inspect")
    page.get_by_text("Attention", exact=True).click()
    head = page.locator("#att-head textarea, #att-head input").first
    assert head.input_value() == ""  # empty: the average, as its label says
    assert "from 0" in page.locator("#inspect-attention").inner_text()
    page.locator("#att-show").click()
    page.wait_for_function(
        "document.querySelector('#att-heatmap').innerText.includes('Rows attend')", timeout=60000
    )
    title = page.locator("#att-heatmap .hm-title").inner_text()
    assert "the average over heads" in title and "Layer 29 (layers 0–29)" in title, title
    page.close()


# -- 11: the prompt's markers never reach a reply or the training data -------------------------


def test_11_replies_with_prompt_markers_are_never_exported(client):
    chat = {
        "messages": [
            {"role": "user", "content": "Where do herons nest?"},
            {"role": "assistant", "content": "On tussocks. <<<Question>> Where?"},
            {"role": "user", "content": "And when does it open?"},
            {"role": "assistant", "content": "At dawn."},
        ]
    }
    sft = client.predict(kind="sft", conversations=[chat], api_name="/export_dataset")
    rows = [json.loads(line) for line in sft.splitlines()]
    replies = [(r.get("messages") or r["completion"])[-1]["content"] for r in rows]
    assert replies == ["At dawn.", "At dawn."]
    chat["messages"][-1]["feedback"] = "like"
    chat["messages"][1] |= {"versions": [{"content": "On reed islands."}, {"content": "x"}]}
    pref = client.predict(kind="preference", conversations=[chat], api_name="/export_dataset")
    assert "<<<" not in "".join(json.loads(r)["chosen"][0]["content"] for r in pref.splitlines())


# -- 15, 16: what llama.cpp lacks points to the Model tab; nothing cut or empty on first load ----


@pytest.mark.browser
def test_15_16_llama_cpp_notes_point_to_the_model_tab_and_nothing_is_cut(page):
    page.set_viewport_size({"width": 1400, "height": 1000})
    assert not page.locator("#saved-chats").is_visible()  # no empty box before a chat is saved
    chips = page.evaluate(
        "[...document.querySelectorAll('#examples .gallery-item')]"
        ".map(e => e.scrollWidth - e.clientWidth)"
    )
    assert chips and max(chips) <= 1, chips  # every example shows whole
    open_tab(page, "Inspect")
    page.get_by_text("Compare decoding strategies").click()
    assert page.locator("#compare-classic").is_disabled()
    assert "Model tab" in page.locator("#compare-note").inner_text()
    page.get_by_text("Attention", exact=True).click()
    wait_for_text(page, "#inspect-attention", "Model tab")  # once the accordion has opened
