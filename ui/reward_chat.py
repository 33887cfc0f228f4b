"""Reward scores in the Chat tab: pick one of your reward models, score every reply of the
open chat (the score joins each reply's stats line), and rank a reply's candidates by it
(best of n by reward, the simplest use of a reward model).

The scoring is ``studio.chat_rewards`` behind ``studio.training``'s rules (only your own
reward models); it runs as one bounded job of the caller (``ChatUI.job``: Stop, the page
closing and --max-request-seconds end it).
"""

from __future__ import annotations

import gradio as gr

from chat.settings import MAX_CANDIDATES
from studio import chat_rewards
from ui import render
from ui.errors import boundary, user_error

HIDDEN = {"api_visibility": "private"}
NONE = ("none", "")
NO_MODEL = (
    "No reward model of yours yet: train one in the **Train** tab (kind: *reward*, on "
    "preference pairs), then score this chat's replies with it here."
)


def candidate_boxes(meta: dict, order: list[int]) -> list[str]:
    """The candidate boxes' Markdown, best first: each one's own stats and its reward, the
    best marked (the texts are model output: defanged)."""
    cands = meta.get("candidates") or []
    per = (meta.get("stats") or {}).get("candidates") or []
    scores = (meta.get("reward") or {}).get("candidates") or []
    out = []
    for rank, i in enumerate(order):
        head = f"**Candidate {i + 1}**"
        if i < len(per):
            head += " · " + render.candidate_line(per[i])
        if i < len(scores) and scores[i] is not None:
            head += f" · reward {scores[i]:+.3f}"
            head += " · ★ best by reward" if rank == 0 else ""
        out.append(f"{head}\n\n{render.defang(cands[i])}")
    return out


class RewardChat:
    """The Chat tab's reward-model controls and their handlers."""

    def __init__(self, training, app, c):
        """Build the controls (inside the Chat tab): "Rank by reward" with the candidates,
        the reward model picker and "Score replies" under the chat."""
        self.training = training
        self.app = app  # the ChatUI: callers and bounded jobs
        with c.candidates_row:
            self.rank_btn = gr.Button("Rank by reward", size="sm", interactive=False,
                                      elem_id="rank-by-reward")  # fmt: skip
        with gr.Column(elem_id="reward-box") as self.box:
            with gr.Row(equal_height=False):
                self.pick = gr.Dropdown([NONE], value="", label="Reward model",
                                        interactive=False, elem_id="reward-pick",
                                        scale=3)  # fmt: skip
                self.score_btn = gr.Button("Score replies", size="sm", interactive=False,
                                           elem_id="score-replies", scale=1)  # fmt: skip
            self.note = gr.Markdown(NO_MODEL, elem_id="reward-note")

    @classmethod
    def maybe(cls, app, c) -> RewardChat | None:
        """The controls, when the app can train (else there is no reward model to pick)."""
        return cls(app.training, app, c) if app.training is not None else None

    # ----- handlers ----------------------------------------------------------------------

    @boundary
    def refresh(self, current, request: gr.Request = None):
        """The caller's reward models in the picker (the current one kept, else the newest);
        without one, the controls stay disabled and the note says how to get one (hidden
        from a visitor who may not train: they cannot get one here)."""
        caller = self.app.caller(request)
        mine = self.training.reward_models(caller)
        choices = [NONE] + [(f"{a.get('name') or a['id']} ({a['id']})", a["id"]) for a in mine]
        ids = [a["id"] for a in mine]
        value = current if current in ids else (ids[0] if ids else "")
        note = "" if mine else NO_MODEL
        shown = bool(mine) or self.training.may_train(caller)
        return (gr.update(visible=shown),
                gr.update(choices=choices, value=value, interactive=bool(mine)),
                *self.enabled(value), note)  # fmt: skip

    @staticmethod
    def enabled(adapter):
        """Score and rank only with a reward model picked."""
        on = gr.update(interactive=bool(adapter))
        return on, on

    def _score(self, adapter, conversation, request, last_only=False):
        if not adapter:
            raise user_error("Pick one of your reward models first (Reward model, under the chat).")
        caller = self.app.caller(request)
        values = {"adapter": adapter, "conversation": conversation or [], "last_only": last_only}
        with self.app.job(request, self.training.max_request_seconds) as cancel:
            return chat_rewards.score(self.training, caller, values, cancel)

    @boundary
    def score(self, adapter, conversation, request: gr.Request = None):
        """Every reply of the open chat (versions and candidates too) with its reward."""
        out = self._score(adapter, conversation, request)
        more = f" (the newest {out.scored} of {out.wanted})" if out.wanted > out.scored else ""
        note = (f"Scored {out.scored} repl{'y' if out.scored == 1 else 'ies'}{more} with the "
                f"reward model `{out.adapter}`: see each reply's stats line (higher is "
                "preferred).")  # fmt: skip
        return self.app.chat.redraw(out.conversation), out.conversation, note

    @boundary
    def rank(self, adapter, conversation, request: gr.Request = None):
        """The last reply's candidates, best first by reward, the best marked."""
        last = (conversation or [None])[-1] or {}
        if len((last.get("meta") or {}).get("candidates") or []) < 2:
            raise user_error("The last reply has no candidates to rank: set candidates above 1 "
                             "in the decoding settings and send a message.")  # fmt: skip
        out = self._score(adapter, conversation, request, last_only=True)
        meta = out.conversation[-1]["meta"]
        order = chat_rewards.rank_order(meta["reward"]["candidates"])
        boxes = candidate_boxes(meta, order)
        updates = [gr.update(value=boxes[k], visible=True) if k < len(boxes)
                   else gr.update(visible=False) for k in range(MAX_CANDIDATES)]  # fmt: skip
        radio = gr.update(choices=[str(i + 1) for i in order], value=str(meta.get("chosen", 0) + 1))
        note = (f"Candidates ranked by the reward model `{out.adapter}`: candidate "
                f"{order[0] + 1} is the best of {len(order)}.")  # fmt: skip
        return (self.app.chat.redraw(out.conversation), out.conversation, *updates, radio,
                note)  # fmt: skip

    # ----- wiring ------------------------------------------------------------------------

    def wire(self, demo, c, train=None) -> list:
        """Connect the controls; the picker follows the Train tab's list of adapters. Returns
        the events that change the chat (to be saved like any other change)."""
        listed = [self.box, self.pick, self.score_btn, self.rank_btn, self.note]
        demo.load(self.refresh, self.pick, listed, **HIDDEN)
        if train is not None:
            train.adapters.change(self.refresh, self.pick, listed, **HIDDEN)
        self.pick.input(self.enabled, self.pick, [self.score_btn, self.rank_btn], queue=False,
                        **HIDDEN)  # fmt: skip
        job = {"concurrency_limit": 1, "concurrency_id": "reward", **HIDDEN}
        stop_on = {"fn": lambda: gr.update(interactive=True), "inputs": None,
                   "outputs": c.stop, "queue": False, **HIDDEN}  # fmt: skip
        scored = self.score_btn.click(**stop_on).then(
            self.score, [self.pick, c.conversation], [c.chatbot, c.conversation, self.note], **job
        )
        ranked = self.rank_btn.click(**stop_on).then(
            self.rank, [self.pick, c.conversation],
            [c.chatbot, c.conversation, *c.boxes, c.choice, self.note], **job,
        )  # fmt: skip
        done = []
        for event in (scored, ranked):
            done.append(event)
            event.then(lambda: gr.update(interactive=False), None, c.stop, queue=False, **HIDDEN)
        return done
