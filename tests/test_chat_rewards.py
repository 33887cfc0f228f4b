"""Reward scores in the chat as plain data: what gets scored, where the scores go, best of n
by reward, and the Train tab's chart rows (issue 20)."""

from __future__ import annotations

import math

from studio import chat_rewards as cr
from studio import conversations as conv
from ui import render
from ui import train_render as tr
from ui.reward_chat import candidate_boxes

STATS = {"completion_tokens": 3, "seed": 1,
         "candidates": [{"completion_tokens": 2}, {"completion_tokens": 4}]}  # fmt: skip
CHAT = [
    {"role": "assistant", "content": "Hi, I am a greeting."},  # answers nothing: not scored
    {"role": "user", "content": "Say hello."},
    {
        "role": "assistant",
        "content": "no",
        "meta": {"candidates": ["no", "Hello!"], "chosen": 0, "stats": STATS},
    },
]


def test_every_reply_version_and_candidate_is_scored_once_newest_first():
    retried = conv.new_version(CHAT, 2, {"role": "assistant", "content": "Hey.",
                                         "meta": {"stats": {"seed": 2}}})  # fmt: skip
    chat = retried + [{"role": "user", "content": "Thanks"},
                      {"role": "assistant", "content": "You are welcome."}]  # fmt: skip
    assert cr.texts_to_score(chat) == [(4, "You are welcome."), (2, "Hey."), (2, "no"),
                                       (2, "Hello!")]  # fmt: skip
    assert cr.texts_to_score(chat, last_only=True) == [(4, "You are welcome.")]
    assert cr.prompt_before(chat, 4)[-1] == {"role": "user", "content": "Thanks"}


def test_scores_land_in_each_replys_meta_and_follow_the_picked_candidate():
    scored = cr.with_scores(CHAT, {2: {"no": -1.5, "Hello!": 2.25}}, "rm-1")
    assert CHAT[2]["meta"].get("reward") is None  # the input is not changed
    meta = scored[2]["meta"]
    assert meta["reward"] == {"adapter": "rm-1", "score": -1.5, "candidates": [-1.5, 2.25]}
    assert cr.shown_score(meta) == -1.5
    assert cr.shown_score(dict(meta, chosen=1)) == 2.25  # "Continue with candidate 2"
    assert cr.shown_score({"stats": {}}) is None
    titles = [m["metadata"]["title"] for m in render.chatbot_messages(scored) if "metadata" in m]
    assert titles[0].endswith("· reward -1.500")
    assert "reward" not in render.chatbot_messages(CHAT)[-1]["metadata"]["title"]


def test_versions_keep_their_own_scores():
    retried = conv.new_version(CHAT, 2, {"role": "assistant", "content": "Hey.",
                                         "meta": {"stats": {"seed": 2}}})  # fmt: skip
    scored = cr.with_scores(retried, {2: {"Hey.": 0.5, "no": -1.0, "Hello!": 1.0}}, "rm-1")
    assert cr.shown_score(scored[2]["meta"]) == 0.5
    back = conv.step_version(scored, 2, -1)
    assert back[2]["content"] == "no" and cr.shown_score(back[2]["meta"]) == -1.0


def test_best_of_n_by_reward_orders_candidates_and_marks_the_best():
    assert cr.rank_order([0.1, 2.0, None, -3.0]) == [1, 0, 3, 2]
    assert cr.rank_order([1.0, 1.0]) == [0, 1]  # ties keep their order
    meta = cr.with_scores(CHAT, {2: {"no": -1.5, "Hello!": 2.25}}, "rm-1")[2]["meta"]
    boxes = candidate_boxes(meta, cr.rank_order(meta["reward"]["candidates"]))
    assert boxes[0].startswith("**Candidate 2** · 4 tokens · reward +2.250 · ★ best by reward")
    assert boxes[1].startswith("**Candidate 1** · 2 tokens · reward -1.500\n")
    assert "best" not in boxes[1]


def test_the_loss_chart_carries_both_series_from_its_first_frame():
    status = {"train_loss": [[1, 2.0], [2, 1.5]], "eval_loss": [[2, 1.8]], "metrics": []}
    rows = tr.chart_rows(tr.loss_rows(status), tr.LOSS_SERIES)
    assert {r["series"] for r in rows} == {"train loss", "eval loss"}
    evals = [r for r in rows if r["series"] == "eval loss" and not math.isnan(r["value"])]
    assert evals == [{"step": 2, "value": 1.8, "series": "eval loss"}]
    first = tr.chart_rows(tr.loss_rows({"train_loss": [[1, 2.0]]}), tr.LOSS_SERIES)
    assert [r["series"] for r in first if math.isnan(r["value"])] == list(tr.LOSS_SERIES)


def test_the_dpo_chart_has_rows_only_for_a_dpo_job():
    sft = {"metrics": [{"step": 2, "eval_loss": 1.0}]}
    reward = {"metrics": [{"step": 2, "accuracy": 0.75}]}
    dpo = {"metrics": [{"step": 2, "rewards/margins": 0.3, "rewards/accuracies": 1.0}]}
    assert tr.dpo_rows(sft) == [] and tr.dpo_rows(reward) == []
    assert {r["series"] for r in tr.dpo_rows(dpo)} == {"reward margin", "preference accuracy"}


def test_a_reward_jobs_accuracy_shows_in_its_progress_line():
    metrics = [{"step": 2, "accuracy": 0.5}, {"step": 4, "eval_accuracy": 0.75}]
    status = {"state": "running", "step": 4, "total_steps": 4, "metrics": metrics}
    assert "pairwise accuracy 0.75" in tr.progress_html(status)
    assert "accuracy" not in tr.progress_html({"state": "running", "metrics": []})
