"""Training data: JSONL shapes, bad lines by number, dedup counts, split, lengths, preview."""

from __future__ import annotations

import json

import pytest

from tests.helpers.tiny_models import tiny_tokenizer
from training.data import build_dataset, normalise_rows, parse_jsonl, preview
from training.errors import TrainingError
from training.settings import TrainSettings


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_three_shapes_load_and_bad_lines_are_reported_by_number():
    text = "\n".join([
        json.dumps({"prompt": "What is 7 plus 8?", "completion": "7 + 8 = 15"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello!"}]}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "Hi"}]}),
        json.dumps({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}),
        json.dumps({"text": "no shape"}),
    ])  # fmt: skip
    sft = parse_jsonl(text, "sft")
    assert [r["messages"][-1]["content"] for r in sft.rows] == ["7 + 8 = 15", "Hello!"]
    assert [e.split(":")[0] for e in sft.errors] == ["line 2", "line 5", "line 6", "line 7"]
    assert "not valid JSON" in sft.errors[0]
    assert "last message must be the assistant" in sft.errors[1]
    assert "preference row" in sft.errors[2]

    pref = parse_jsonl(text, "preference")
    assert pref.rows == [{"prompt": [{"role": "user", "content": "Hi"}],
                          "chosen": "Hello!", "rejected": "Go away."}]  # fmt: skip
    assert [e.split(":")[0] for e in pref.errors] == ["line 1", "line 2", "line 3", "line 5",
                                                      "line 7"]  # fmt: skip


def test_the_apps_own_feedback_rows_are_accepted_as_they_are():
    from studio.datasets import export

    chat = [
        {"role": "user", "content": "What is 7 plus 8?"},
        {"role": "assistant", "content": "15", "feedback": "like",
         "versions": [{"content": "It is 78."}, {"content": "15", "feedback": "like"}],
         "current": 1},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome."},
    ]  # fmt: skip
    sft = normalise_rows(export("sft", [chat]).rows, "sft")
    # Each reply once, though the app writes both a messages row and a prompt/completion row.
    assert [r["messages"][-1]["content"] for r in sft] == ["15", "You are welcome."]
    pref = normalise_rows(export("preference", [chat]).rows, "preference")
    assert pref == [{"prompt": [{"role": "user", "content": "What is 7 plus 8?"}],
                     "chosen": "15", "rejected": "It is 78."}]  # fmt: skip


def _rows(n):
    return [{"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"}
            for i in range(n)]  # fmt: skip


def test_duplicates_are_counted_and_the_split_is_seeded(tok):
    rows = _rows(10)
    rows += [dict(rows[0]), {"prompt": "what is 1 plus 1", "completion": "1 + 1 = 2!"}]  # exact
    rows.append({"prompt": "What is 3 plus 3?", "completion": "3 + 3 = 6."})  # exact
    fox = "The quick brown fox jumps over the lazy dog, again and again, all day long."
    rows.append({"prompt": "Tell me about the fox.", "completion": fox})
    rows.append({"prompt": "Tell me about the fox.", "completion": fox.replace("dog", "dogs")})
    data = build_dataset(rows, "sft", TrainSettings(eval_share=0.2, seed=3), tok)
    c = data.counts
    assert (c["loaded"], c["duplicates"], c["near_duplicates"]) == (15, 3, 1)
    assert (c["train"], c["eval"]) == (9, 2)
    again = build_dataset(rows, "sft", TrainSettings(eval_share=0.2, seed=3), tok)
    assert again.eval == data.eval
    other = build_dataset(rows, "sft", TrainSettings(eval_share=0.2, seed=4), tok)
    assert other.eval != data.eval
    assert len(data.train_features) == 9
    for f in data.train_features:
        assert len(f["input_ids"]) == len(f["labels"])


def test_overlong_rows_are_truncated_or_dropped_with_counts(tok):
    long = {"prompt": "Hi", "completion": "red green blue " * 40}
    rows = _rows(3) + [long]
    cut = build_dataset(rows, "sft", TrainSettings(max_length=32, eval_share=0), tok)
    assert (cut.counts["truncated"], cut.counts["dropped"], cut.counts["train"]) == (1, 0, 4)
    assert max(len(f["input_ids"]) for f in cut.train_features) == 32
    drop = build_dataset(rows, "sft", TrainSettings(max_length=32, overlong="drop",
                                                    eval_share=0), tok)  # fmt: skip
    assert (drop.counts["truncated"], drop.counts["dropped"], drop.counts["train"]) == (0, 1, 3)


def test_empty_data_and_missing_pairs_say_what_to_do(tok):
    with pytest.raises(TrainingError, match="like some replies"):
        build_dataset([], "sft", TrainSettings(), tok)
    with pytest.raises(TrainingError, match="No preference pairs"):
        build_dataset([], "dpo", TrainSettings(kind="dpo"), tok)
    with pytest.raises(TrainingError, match="row 1: missing chosen, rejected"):
        build_dataset(_rows(2), "dpo", TrainSettings(kind="dpo"), tok)


def test_preview_marks_only_the_assistant_tokens(tok):
    row = {"messages": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "What is 7 plus 8?"},
                        {"role": "assistant", "content": "7 + 8 = 15"},
                        {"role": "user", "content": "And 2 plus 2?"},
                        {"role": "assistant", "content": "4"}]}  # fmt: skip
    p = preview(tok, row, 256)
    assert "".join(piece for piece, _ in p["tokens"]) == p["text"]
    assert p["text"] == tok.apply_chat_template(row["messages"], tokenize=False)
    assert p["n_tokens"] == len(p["tokens"]) and not p["truncated"]
    loss = "".join(piece if carries else "\0" for piece, carries in p["tokens"])
    # Both replies with their end-of-turn marker, nothing of the system or user turns.
    assert [s for s in loss.split("\0") if s] == ["7 + 8 = 15<|im_end|>\n", "4<|im_end|>\n"]
    short = preview(tok, row, 10)
    assert short["truncated"] and len(short["tokens"]) == 10 and short["n_tokens"] > 10
    assert not any(carries for _, carries in short["tokens"])


def test_the_tokenizer_alone_loads_from_a_model_folder(tmp_path):
    from tests.helpers.tiny_models import save_tiny
    from training.data import load_tokenizer

    tok = load_tokenizer(save_tiny("gpt2", tmp_path / "m"))
    row = {"prompt": "Hi", "completion": "Hello!"}
    assert preview(tok, row, 64) == preview(tiny_tokenizer(), row, 64)
