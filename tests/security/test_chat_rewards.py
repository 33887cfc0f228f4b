"""Reward scores in the Chat tab: a visitor scores only with their own reward models, and a bad
request is refused in one sentence before any model loads (issue 20).

In process, on a public app's policy (no logins, nobody an admin): the reward model here is
only its saved meta, since a refused request must never get as far as loading it.
"""

from __future__ import annotations

import json

import pytest

from chat.errors import ChatStudioError, InputError
from studio import chat_rewards
from studio.access import Access, AccessError, Caller
from studio.training import Training, TrainLimits

CHAT = [
    {"role": "user", "content": "Say hello."},
    {"role": "assistant", "content": "Hello!", "meta": {"candidates": ["Hello!", "no"]}},
]


@pytest.fixture
def shared(tmp_path):
    """A public app's training policy with one reward model, visitor A's."""
    access = Access(secret=b"test", private=False)
    training = Training(tmp_path, access, TrainLimits(allow_training=True), "unused-base")
    folder = tmp_path / "adapters" / "rm-a"
    folder.mkdir(parents=True)
    meta = {"id": "rm-a", "name": "A's", "kind": "reward", "owner": access.owner("visitor-a"),
            "created": "2026-11-30T12:00:00"}  # fmt: skip
    (folder / "adapter_meta.json").write_text(json.dumps(meta))
    a, b = (Caller(session=s, user=None, admin=False) for s in ("visitor-a", "visitor-b"))
    return training, a, b


def one_sentence(text: str) -> bool:
    return text.count(". ") <= 1 and "\n" not in text and "Traceback" not in text


def test_a_visitor_cannot_score_with_another_visitors_reward_model(shared):
    training, a, b = shared
    assert [m["id"] for m in training.reward_models(a)] == ["rm-a"]
    assert training.reward_models(b) == []  # not even listed in B's picker
    with pytest.raises(AccessError, match="No reward model 'rm-a' of yours") as err:
        chat_rewards.score(training, b, {"adapter": "rm-a", "conversation": CHAT})
    assert one_sentence(str(err.value))
    with pytest.raises(AccessError, match="No reward model"):
        training.reward(b, "Say hello.", "Hello!", "rm-a")  # the /reward endpoint's path


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"adapter": "x" * 5000, "conversation": CHAT}, "adapter"),
        ({"adapter": "", "conversation": CHAT}, "adapter"),
        ({"adapter": "rm-a", "conversation": CHAT * 1001}, "conversation"),
        ({"adapter": "rm-a", "conversation": "not a chat"}, "conversation"),
        ({"adapter": "rm-a", "conversation": CHAT, "extra": 1}, "extra"),
        ({"adapter": "../../etc", "conversation": CHAT}, "No reward model"),
        ({"adapter": "rm-a", "conversation": [{"role": "user", "content": "Hi"}]}, "No reply"),
    ],
)
def test_bad_requests_are_one_sentence(shared, values, says):
    training, a, _ = shared
    with pytest.raises(ChatStudioError) as err:
        chat_rewards.score(training, a, values)
    assert says in str(err.value) and one_sentence(str(err.value)), err.value
    if says in ("adapter", "conversation", "extra"):
        assert isinstance(err.value, InputError)
