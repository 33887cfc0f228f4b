"""Prompt building, transcript fallback, stop strings and context fitting (pure logic)."""

import pytest

from chat.errors import InputError
from chat.prompting import fit_prompt, render_transcript, split_turns, validate_history
from chat.stops import StopFilter


class WordRenderer:
    """A stand-in tokenizer: one token per whitespace-separated word."""

    render = staticmethod(render_transcript)

    def count_tokens(self, prompt):
        return len(prompt.split())

    def truncate(self, text, max_tokens):
        return " ".join(text.split()[:max_tokens])


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
    fitted = fit_prompt(WordRenderer(), SYSTEM, turns(2), "hello", n_ctx=500, max_new_tokens=50)
    assert fitted.dropped_turns == 0 and not fitted.notices
    assert fitted.messages[0] == SYSTEM[0] and fitted.messages[-1]["content"] == "hello"
    assert len(fitted.messages) == 6


def test_oldest_turns_dropped_first_system_and_message_kept():
    fitted = fit_prompt(WordRenderer(), SYSTEM, turns(20), "newest", n_ctx=200, max_new_tokens=50)
    assert fitted.dropped_turns > 0
    assert fitted.prompt_tokens + fitted.max_new_tokens <= 200
    assert fitted.messages[0] == SYSTEM[0]
    assert fitted.messages[-1]["content"] == "newest"
    kept_first = fitted.messages[1]["content"]
    assert kept_first.startswith(f"q{fitted.dropped_turns} ")  # oldest ones went
    assert "Dropped" in fitted.notices[0]


def test_overlong_message_is_cut_with_notice():
    long = "word " * 5000
    fitted = fit_prompt(WordRenderer(), SYSTEM, turns(3), long, n_ctx=300, max_new_tokens=50)
    assert fitted.prompt_tokens + fitted.max_new_tokens <= 300
    assert fitted.messages[-1]["content"].startswith("word word")
    assert any("too long" in n for n in fitted.notices)


def test_reply_budget_larger_than_window_is_capped():
    fitted = fit_prompt(WordRenderer(), SYSTEM, [], "hi", n_ctx=100, max_new_tokens=4000)
    assert fitted.max_new_tokens <= 50 and fitted.prompt_tokens + fitted.max_new_tokens <= 100
    assert any("capped" in n for n in fitted.notices)


def test_persona_too_long_for_window_is_a_clear_error():
    huge = [{"role": "system", "content": "x " * 500}]
    with pytest.raises(InputError, match="--n-ctx"):
        fit_prompt(WordRenderer(), huge, [], "hi", n_ctx=100, max_new_tokens=10)


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
