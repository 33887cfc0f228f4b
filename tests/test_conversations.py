"""Conversation bookkeeping (versions, pairs, feedback, saved chats) and dataset exports."""

import json

import pytest

from chat.errors import InputError
from studio import conversations as conv
from studio.datasets import export

U1 = {"role": "user", "content": "Hi"}
A1 = {"role": "assistant", "content": "Hello!", "meta": {"tokens": [[1]], "stats": {"x": 1}}}
U2 = {"role": "user", "content": "Name a colour."}
A2 = {"role": "assistant", "content": "Blue."}


def test_a_retry_keeps_the_old_reply_and_what_followed_as_a_version():
    chat = [U1, A1, U2, A2]
    retried = conv.new_version(chat, 1, {"role": "assistant", "content": "Hey there!"})
    assert [m["content"] for m in retried] == ["Hi", "Hey there!"]
    assert conv.versions_of(retried[1]) == (2, 2)
    back = conv.step_version(retried, 1, -1)
    assert [m["content"] for m in back] == ["Hi", "Hello!", "Name a colour.", "Blue."]
    assert conv.versions_of(back[1]) == (1, 2) and back[1]["meta"]["stats"] == {"x": 1}
    forward = conv.step_version(back, 1, +1)
    assert [m["content"] for m in forward] == ["Hi", "Hey there!"]


def test_editing_a_user_message_keeps_the_old_branch():
    chat = [U1, A1, U2, A2]
    edited = conv.new_version(chat, 2, {"role": "user", "content": "Name a fruit."})
    assert edited[-1]["content"] == "Name a fruit." and len(edited) == 3
    old = conv.step_version(edited, 2, -1)
    assert [m["content"] for m in old][-2:] == ["Name a colour.", "Blue."]


def test_delete_pair_and_feedback():
    chat = [U1, A1, U2, A2]
    assert conv.delete_pair(chat, 1) == [U2, A2] == conv.delete_pair(chat, 0)
    assert conv.set_feedback(chat, 3, "like")[3]["feedback"] == "like"
    assert conv.user_before(chat, 3) == 2 and conv.last_user(chat) == 2


def test_saved_chats_are_light_and_titled():
    chats = conv.save_chat([], "abc", [U1, A1], "assistant")
    assert chats[0]["id"] == "abc" and chats[0]["messages"][1]["meta"]["tokens"] == [[1]]
    assert conv.title_of(chats[0]) == "Hi"
    chats = conv.save_chat(chats, "abc", [U1, A1, U2, A2], "tutor")
    assert len(chats) == 1 and chats[0]["persona"] == "tutor" and len(chats[0]["messages"]) == 4


def rows(kind, chats):
    data = export(kind, chats)
    return data, [json.loads(line) for line in data.jsonl().splitlines()]


def test_sft_rows_in_both_shapes_skip_disliked_replies():
    disliked = dict(A2, feedback="dislike")
    data, out = rows("sft", [[U1, A1, U2, disliked]])
    assert out == [
        {"messages": [U1, {"role": "assistant", "content": "Hello!"}]},
        {"prompt": [U1], "completion": [{"role": "assistant", "content": "Hello!"}]},
    ]
    assert data.summary() == "2 rows; dropped 0 exact and 0 near duplicate(s)"


def test_sft_uses_the_exact_messages_sent_when_recorded():
    sent = [{"role": "system", "content": "Be brief."}, U1]
    reply = {"role": "assistant", "content": "Hello!", "meta": {"prompt_messages": sent}}
    _, out = rows("sft", [[U1, reply]])
    assert out[0]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_preference_from_likes_retries_and_candidates():
    chat = conv.new_version([U1, dict(A1, feedback="dislike")], 1,
                            {"role": "assistant", "content": "Hey there!"})  # fmt: skip
    chat = conv.set_feedback(chat, 1, "like")
    picked = {"role": "assistant", "content": "Red.",
              "meta": {"candidates": ["Green.", "Red."], "chosen": 1}}  # fmt: skip
    _, out = rows("preference", [chat + [U2, picked]])
    assert out == [
        {"prompt": [U1], "chosen": [{"role": "assistant", "content": "Hey there!"}],
         "rejected": [{"role": "assistant", "content": "Hello!"}]},
        {"prompt": [U1, {"role": "assistant", "content": "Hey there!"}, U2],
         "chosen": [{"role": "assistant", "content": "Red."}],
         "rejected": [{"role": "assistant", "content": "Green."}]},
    ]  # fmt: skip


def test_exact_and_near_duplicates_are_dropped():
    a = [U1, {"role": "assistant", "content": "The capital of France is Paris."}]
    b = [U1, {"role": "assistant", "content": "the capital of france is Paris!"}]  # exact
    c = [U1, {"role": "assistant", "content": "The capital of France is Paris, yes."}]  # near
    d = [U2, {"role": "assistant", "content": "Blue, like the sky."}]
    data, out = rows("sft", [a, b, c, d])
    assert len(out) == 4 and data.dropped == {"exact": 2, "near": 2}


def test_bad_input_is_a_clear_error():
    with pytest.raises(InputError, match="kind"):
        export("rlhf", [[U1, A1]])
    with pytest.raises(InputError, match="conversations\\[0\\]"):
        export("sft", [[{"role": "user"}]])


def _variants(seed: int = 7) -> list[str]:
    """Replies and their usual near duplicates: retried with a word changed, dropped or added."""
    import random

    rng = random.Random(seed)
    words = ("the river runs north past the old mill and the bridge of seven stones where "
             "people meet on market days to trade wool salt fish and stories").split()  # fmt: skip
    texts = []
    for _ in range(120):
        if texts and rng.random() < 0.4:
            parts = rng.choice(texts).split()
            i = rng.randrange(len(parts))
            how = rng.random()
            if how < 0.4:
                parts[i] = rng.choice(words)
            elif how < 0.7 and len(parts) > 4:
                del parts[i]
            else:
                parts.insert(i, rng.choice(words))
            texts.append(" ".join(parts))
        else:
            texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))))
    return texts


def test_the_near_duplicate_index_keeps_what_difflib_keeps():
    import difflib

    from training.dedup import NearIndex, is_near

    def near(a, b):  # the old check, run against every kept text
        m = difflib.SequenceMatcher(None, a, b, autojunk=False)
        return m.real_quick_ratio() >= 0.9 and m.quick_ratio() >= 0.9 and m.ratio() >= 0.9

    texts = _variants()
    old, index, new = [], NearIndex(), []
    for t in texts:
        if not any(near(t, k) for k in old):
            old.append(t)
        if not index.find(t):
            index.add(t)
            new.append(t)
    assert new == old and len(old) < len(texts)  # some near duplicates, the same ones
    for a, b in zip(texts, texts[1:], strict=False):
        assert is_near(a, b) == (difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= 0.9)


def test_a_long_chat_exports_its_near_duplicates_as_before():
    """Each reply's row repeats the chat so far: rows that grow by little are near duplicates."""
    chat = [{"role": ("user", "assistant")[i % 2], "content": f"message {i}"} for i in range(200)]
    data = export("sft", [chat])
    assert len(data.rows) == 36 and data.dropped == {"exact": 0, "near": 164}  # as difflib


@pytest.mark.parametrize(
    "message, says",
    [
        ({"versions": 5}, "versions: Input should be a valid list"),
        ({"versions": [{"content": "A"}, {"content": "B"}], "current": 7}, "from 0 to 1"),
        ({"meta": {"candidates": ["A", "B"], "chosen": 9}}, "from 0 to 1"),
        ({"meta": {"candidates": [1, 2]}}, "candidates[0]"),
        ({"meta": {"prompt_messages": [3]}}, "prompt_messages[0]"),
    ],
)
def test_crafted_versions_and_candidates_are_one_sentence(message, says):
    reply = {"role": "assistant", "content": "B", **message}
    with pytest.raises(InputError, match=r"^conversations\[0\]\[1\]") as err:
        export("preference", [[U1, reply]])
    assert says in str(err.value)


def test_an_export_is_bounded_and_stops_when_cancelled():
    import threading

    from chat.errors import Cancelled
    from studio.datasets import MAX_MESSAGES, Budget

    with pytest.raises(InputError, match="export fewer chats"):
        export("sft", [[U1, A2]] * (MAX_MESSAGES // 2 + 1))
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        export("sft", [[U1, A2]], Budget(stop))


def test_saved_chats_keep_token_probabilities_within_a_budget():
    token = {"text": "Hi", "id": 7, "logprob": -0.123456789, "sampler_logprob": None,
             "top": [{"text": "Hi", "id": 7, "logprob": -0.123456789}]}  # fmt: skip
    reply = {"role": "assistant", "content": "Hi", "meta": {"tokens": [[token] * 50],
             "prompt": "x" * 1000, "parts": {}, "stats": {"seed": 1}}}  # fmt: skip
    saved = conv.light([U1, reply])[1]["meta"]
    assert "prompt" not in saved and saved["tokens"][0][0]["logprob"] == -0.1235
    chats = [conv.new_chat_record("assistant", [U1, reply]) for _ in range(4)]
    size = len(json.dumps(chats[0]))
    fitted = conv.fit_budget(chats, budget=int(size * 2.5))
    assert [bool(c["messages"][1]["meta"]["tokens"]) for c in fitted] == [True, True, False, False]
    assert all(c["messages"][1]["content"] == "Hi" for c in fitted)  # messages never go


def test_preference_rows_come_from_every_branch():
    """Issue 17.4: a like on a version behind an edited message still makes its pair."""
    ask = {"role": "user", "content": "Name one fruit."}
    chat = [ask, {"role": "assistant", "content": "Apple."}]
    chat = conv.new_version(chat, 1, {"role": "assistant", "content": "Banana."})
    chat = conv.set_feedback(chat, 1, "like")
    chat = conv.new_version(chat, 0, {"role": "user", "content": "Name one red fruit."})
    chat = chat + [{"role": "assistant", "content": "Cherry."}]
    _, out = rows("preference", [chat])
    assert out == [
        {"prompt": [ask], "chosen": [{"role": "assistant", "content": "Banana."}],
         "rejected": [{"role": "assistant", "content": "Apple."}]},
    ]  # fmt: skip
