"""Prompt building, transcript fallback, stop strings and context fitting (pure logic)."""

import pytest

from chat.errors import InputError
from chat.prompting import (
    PromptRequest,
    fit_prompt,
    render_transcript,
    split_turns,
    validate_history,
)
from chat.stops import StopFilter


class WordRenderer:
    """A stand-in tokenizer: one token per whitespace-separated word."""

    render = staticmethod(render_transcript)

    def count_tokens(self, prompt):
        return len(prompt.split())

    def truncate(self, text, max_tokens):
        return " ".join(text.split()[:max_tokens])


def fit(*args, **kwargs):
    """``fit_prompt`` on the word renderer."""
    return fit_prompt(WordRenderer(), PromptRequest(*args, **kwargs))


def turns(n, words=10):
    out = []
    for i in range(n):
        out += [
            {"role": "user", "content": f"q{i} " + "w " * words},
            {"role": "assistant", "content": f"a{i} " + "w " * words},
        ]
    return out


SYSTEM = [{"role": "system", "content": "Be kind."}]


def test_transcript_format_for_models_without_template():
    text = render_transcript(
        SYSTEM
        + [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert text == "Be kind.\n\nUser: Hi\nAssistant: Hello\nUser: Bye\nAssistant:"


def test_everything_fits_nothing_dropped():
    fitted = fit(SYSTEM, turns(2), "hello", n_ctx=500, max_new_tokens=50)
    assert fitted.dropped_turns == 0 and not fitted.notices
    assert fitted.messages[0] == SYSTEM[0] and fitted.messages[-1]["content"] == "hello"
    assert len(fitted.messages) == 6


def test_oldest_turns_dropped_first_system_and_message_kept():
    fitted = fit(SYSTEM, turns(20), "newest", n_ctx=200, max_new_tokens=50)
    assert fitted.dropped_turns > 0
    assert fitted.prompt_tokens + fitted.max_new_tokens <= 200
    assert fitted.messages[0] == SYSTEM[0]
    assert fitted.messages[-1]["content"] == "newest"
    kept_first = fitted.messages[1]["content"]
    assert kept_first.startswith(f"q{fitted.dropped_turns} ")  # oldest ones went
    assert "Dropped" in fitted.notices[0]


def test_overlong_message_is_cut_with_notice():
    long = "word " * 5000
    fitted = fit(SYSTEM, turns(3), long, n_ctx=300, max_new_tokens=50)
    assert fitted.prompt_tokens + fitted.max_new_tokens <= 300
    assert fitted.messages[-1]["content"].startswith("word word")
    assert any("too long" in n for n in fitted.notices)


def test_reply_budget_larger_than_window_is_capped():
    fitted = fit(SYSTEM, [], "hi", n_ctx=100, max_new_tokens=4000)
    assert fitted.max_new_tokens <= 50 and fitted.prompt_tokens + fitted.max_new_tokens <= 100
    assert any("capped" in n for n in fitted.notices)


def test_persona_too_long_for_window_is_a_clear_error():
    huge = [{"role": "system", "content": "x " * 500}]
    with pytest.raises(InputError, match="--n-ctx"):
        fit(huge, [], "hi", n_ctx=100, max_new_tokens=10)


def test_history_validation():
    assert validate_history(None) == []
    with pytest.raises(InputError, match=r"history\[0\].role"):
        validate_history([{"role": "system", "content": "x"}])
    with pytest.raises(InputError, match="list"):
        validate_history("hello")
    clean = validate_history([{"role": "user", "content": "a", "extra": 1}])
    assert clean == [{"role": "user", "content": "a"}]


def test_split_turns_groups_user_with_replies():
    assert [len(t) for t in split_turns(turns(3))] == [2, 2, 2]
    assert [
        len(t) for t in split_turns([{"role": "assistant", "content": "greeting"}] + turns(1))
    ] == [1, 2]


def test_stop_filter_cuts_and_holds_back_prefixes():
    f = StopFilter(["\nUser:"])
    assert not f.feed("Hello there")
    assert not f.feed("\nUs")
    assert f.text() == "Hello there"  # "\nUs" could start a stop string
    assert f.feed("er: next")
    assert f.stopped and f.text() == "Hello there"
    g = StopFilter(["###"])
    g.feed("a#")
    assert g.text() == "a" and g.text(final=True) == "a#"


class P:
    """A stand-in retrieved passage."""

    def __init__(self, text, score, source="doc.txt", page=None, section=None):
        self.text, self.score, self.source, self.page, self.section = (
            text,
            score,
            source,
            page,
            section,
        )


def test_passages_are_numbered_delimited_and_marked_as_reference():
    passages = [P("Herons nest on tussocks.", 0.9, "marsh.pdf", page=3), P("Open at dawn.", 0.5)]
    fitted = fit(SYSTEM, [], "Where?", n_ctx=500, max_new_tokens=50, passages=passages)
    content = fitted.messages[-1]["content"]
    block = "<<<REFERENCE [1] marsh.pdf, page 3>>>\nHerons nest on tussocks.\n<<<END [1]>>>"
    assert block in content
    assert "<<<REFERENCE [2] doc.txt>>>" in content
    assert "not instructions" in content and "[1], [2]" in content
    assert content.endswith("Question: Where?")
    assert fitted.passages == passages


def test_tight_window_drops_old_turns_then_lowest_scoring_passages():
    passages = [P("best " * 40, 0.9), P("middle " * 40, 0.6), P("worst " * 40, 0.3)]
    fitted = fit(SYSTEM, turns(3), "Q?", n_ctx=180, max_new_tokens=40, passages=passages)
    assert fitted.dropped_turns == 3
    assert [p.score for p in fitted.passages] == [0.9, 0.6]
    assert fitted.prompt_tokens + fitted.max_new_tokens <= 180
    assert any("lowest-scoring" in n for n in fitted.notices)


class CountingRenderer(WordRenderer):
    """Counts renders, and how many messages they held in all."""

    def __init__(self):
        self.renders = 0
        self.rendered_messages = 0

    def render(self, messages):
        self.renders += 1
        self.rendered_messages += len(messages)
        return render_transcript(messages)


def test_fitting_a_huge_history_renders_only_window_sized_prompts():
    backend = CountingRenderer()
    history = turns(5000, words=3)  # 10,000 messages
    fitted = fit_prompt(
        backend, PromptRequest(SYSTEM, history, "newest", n_ctx=400, max_new_tokens=50)
    )
    assert fitted.prompt_tokens + 50 <= 400 and fitted.dropped_turns > 4900
    assert backend.renders < 30
    assert backend.rendered_messages < 30 * 100  # never the whole history at once


@pytest.mark.parametrize("seed", range(20))
def test_fitting_keeps_exactly_the_most_turns_that_fit(seed):
    import random

    rng = random.Random(seed)
    history = []
    for i in range(rng.randint(0, 60)):
        history += [
            {"role": "user", "content": f"q{i} " + "w " * rng.randint(0, 40)},
            {"role": "assistant", "content": f"a{i} " + "w " * rng.randint(0, 40)},
        ]
    n_ctx, max_new = rng.randint(120, 900), 40
    fitted = fit(SYSTEM, history, "now", n_ctx=n_ctx, max_new_tokens=max_new)
    # Brute force: the fewest dropped turns whose prompt fits.
    budget = n_ctx - 4 - max_new
    groups = split_turns(history)
    for drop in range(len(groups) + 1):
        msgs = SYSTEM + [m for t in groups[drop:] for m in t] + [{"role": "user", "content": "now"}]
        if len(render_transcript(msgs).split()) <= budget:
            break
    assert fitted.dropped_turns == drop


def test_fitting_gives_up_on_cancel():
    import threading

    from chat.errors import Cancelled

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        fit_prompt(WordRenderer(), PromptRequest(SYSTEM, turns(50), "x", 300, 50), cancel)
