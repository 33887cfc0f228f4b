"""Which parts of the input pushed a token, and which way.

The *target* is one reply token's log-probability, or the whole reply's (the
sum over its tokens). A positive attribution means the input pushed toward the
target, a negative one away from it.

- **Feature ablation** (any backend that can score text, llama.cpp included):
  remove one part, score again; the attribution is how much the target's
  log-probability falls. Exact for one part at a time: it *is* the change.
- **KernelSHAP**: many random subsets of parts removed together, a weighted
  linear fit (Shapley values, approximately); the attributions sum to the
  change from the empty input to the whole one.
- **Input x gradient** and **integrated gradients** over tokens (transformers,
  gradients of the target with respect to the token embeddings). Integrated
  gradients' attributions sum to the change from a zero embedding to the real
  one, up to the reported completeness gap.

captum does the attribution arithmetic; this module only defines what is
scored. Plain data out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from chat.errors import Cancelled, InputError
from chat.probs import log_softmax
from explain import segments as seg

PART_METHODS = ("ablation", "kernel_shap")
TOKEN_METHODS = ("input_x_gradient", "integrated_gradients")
METHODS = PART_METHODS + TOKEN_METHODS
MEMORY_EFFECT = 0.1  # nats per reply token: below this the passages did not matter


@dataclass
class Target:
    """What is explained: reply token ``index`` (or the whole reply when None)."""

    reply_ids: list[int]
    index: int | None = None

    def check(self, info) -> None:
        """Token ids of the model (``info``: its ``ModelInfo``) and an index within the reply."""
        if not self.reply_ids:
            raise InputError("The reply is empty: there is no token to explain.")
        self.reply_ids = info.check_token_ids(self.reply_ids, "reply_ids")
        if self.index is not None and not 0 <= self.index < len(self.reply_ids):
            raise InputError(
                f"token: the reply has {len(self.reply_ids)} tokens; choose 0 to "
                f"{len(self.reply_ids) - 1}, or none for the whole reply"
            )

    def span(self) -> tuple[list[int], int]:
        """``(reply ids fed after the prompt, how many of them are scored)``."""
        if self.index is None:
            return list(self.reply_ids), len(self.reply_ids)
        return list(self.reply_ids[: self.index + 1]), 1


def target_logprob(backend, prompt_ids: list[int], target: Target) -> float:
    """Log-probability of the target given ``prompt_ids`` (a sum over the reply when whole)."""
    fed, scored = target.span()
    ids = list(prompt_ids) + fed
    if len(ids) < 2:
        return 0.0
    if scored == 1:  # one token: the logits of one position, not of every position
        return float(log_softmax(backend.next_logits(ids[:-1]))[ids[-1]])
    first = max(1, len(ids) - scored)
    lps, _ = backend.score(ids, first=first)
    return float(np.sum(lps))


class _Scorer:
    """Scores the target with some segments removed; counts calls; honours cancel."""

    def __init__(self, backend, segments, target, cancel=None, progress=None, expected=1):
        self.backend, self.segments, self.target = backend, segments, target
        self.free = [i for i, s in enumerate(segments) if not s.fixed]
        self.cancel, self.progress, self.expected = cancel, progress, max(1, expected)
        self.calls = 0

    def __call__(self, keep_free) -> float:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("Attribution stopped.")
        kept = {self.free[j] for j, k in enumerate(keep_free) if k > 0.5}
        text = seg.join(self.segments, lambda i: i in kept)
        ids = self.backend.tokenize(text, special=True)
        self.calls += 1
        if self.progress is not None:
            self.progress(min(1.0, self.calls / self.expected), f"{self.calls} model calls")
        return target_logprob(self.backend, ids, self.target)

    def batch(self, torch):
        """A captum forward function: a batch of keep-masks -> a batch of scores."""

        def forward(masks):
            return torch.tensor([self(row.tolist()) for row in masks], dtype=torch.float64)

        return forward


def attribute_parts(
    backend, segments, target: Target, method: str = "ablation", n_samples: int = 40,
    seed: int = 0, progress=None, cancel=None,
) -> dict:  # fmt: skip
    """Signed attribution of every removable segment, by ablation or KernelSHAP."""
    import torch
    from captum.attr import FeatureAblation, KernelShap

    if method not in PART_METHODS:
        raise InputError(
            f"method: over parts or sentences choose one of: {', '.join(PART_METHODS)}"
        )
    target.check(backend.info)
    n_samples = max(8, min(int(n_samples), 400))
    started = time.perf_counter()
    free = [i for i, s in enumerate(segments) if not s.fixed]
    expected = len(free) + 1 if method == "ablation" else n_samples + 2
    scorer = _Scorer(backend, segments, target, cancel, progress, expected)
    ones = torch.ones(1, len(free), dtype=torch.float64)
    zeros = torch.zeros_like(ones)
    full = scorer([1] * len(free))
    empty = scorer([0] * len(free))
    forward = scorer.batch(torch)
    if method == "ablation":
        values = FeatureAblation(forward).attribute(ones, baselines=zeros)[0]
    else:
        torch.manual_seed(seed)
        values = KernelShap(forward).attribute(ones, baselines=zeros, n_samples=n_samples)[0]
    values = [float(v) for v in values]
    out = _report(segments, free, values, method, full, empty)
    out.update(model_calls=scorer.calls, seconds=round(time.perf_counter() - started, 3))
    out["cost"] = f"{scorer.calls} scorings of the prompt in {out['seconds']} s"
    return out


def _report(segments, free, values, method, full, empty) -> dict:
    """Per segment ``{text, label, kind, attribution}`` (fixed ones have None)."""
    by_index = dict(zip(free, values, strict=True))
    rows = [
        {
            "text": s.text,
            "label": s.label,
            "kind": s.kind,
            "attribution": None if s.fixed else round(by_index[i], 5),
        }
        for i, s in enumerate(segments)
    ]
    total = float(sum(values))
    return {
        "method": method,
        "segments": rows,
        "target_logprob": round(full, 5),
        "without_all": round(empty, 5),
        "total_change": round(full - empty, 5),
        "sum_of_attributions": round(total, 5),
        "completeness_gap": round(total - (full - empty), 5),
    }


def passage_reliance(backend, segments, target: Target, cancel=None) -> dict:
    """How much the passages mattered: the target with and without all of them at once."""
    target.check(backend.info)
    passages = [i for i, s in enumerate(segments) if s.kind == "passage"]
    if not passages:
        raise InputError("This reply had no passages in its prompt: turn on Use documents.")
    scorer = _Scorer(backend, segments, target, cancel)
    free = scorer.free
    full = scorer([1] * len(free))
    without = scorer([0 if i in passages else 1 for i in free])
    _, scored = target.span()
    per_token = (full - without) / scored
    memory = per_token < MEMORY_EFFECT
    return {
        "with_passages": round(full, 5),
        "without_passages": round(without, 5),
        "change_per_token": round(per_token, 5),
        "answered_from_memory": memory,
        "verdict": (
            "Answered from memory: removing the passages barely changes how likely this reply "
            f"is ({per_token:+.3f} nats a token)."
            if memory
            else f"The passages carried this reply: without them each token is {per_token:.3f} "
            "nats less likely."
        ),
    }


def attribute_tokens(model, torch, ids: list[int], n_prompt: int, target: Target,
                     method: str = "input_x_gradient", steps: int = 20, device="cpu",
                     cancel=None, baseline_id: int | None = None) -> dict:  # fmt: skip
    """Per input token, the gradient-based attribution of the target (transformers models).

    Integrated gradients walks from a baseline input (every token but the first
    replaced by ``baseline_id``, e.g. the end-of-text token; None: zero
    embeddings) to the real one."""
    from captum.attr import InputXGradient, IntegratedGradients

    if method not in TOKEN_METHODS:
        raise InputError(f"method: over tokens choose one of: {', '.join(TOKEN_METHODS)}")
    started = time.perf_counter()
    fed, scored = target.span()
    full = list(ids[:n_prompt]) + fed
    inputs = torch.tensor([full], device=device)
    positions = list(range(len(full) - scored - 1, len(full) - 1))
    goal = torch.tensor(full[len(full) - scored :], device=device)
    embed = model.get_input_embeddings()

    def forward(embeds):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Attribution stopped.")
        logits = model(inputs_embeds=embeds, use_cache=False).logits[:, positions].float()
        lp = torch.log_softmax(logits, dim=-1)
        picked = lp.gather(-1, goal.expand(lp.shape[0], -1).unsqueeze(-1)).squeeze(-1)
        return picked.sum(dim=-1)

    with torch.no_grad():
        x = embed(inputs).detach().float()
        # The baseline: every token replaced by ``baseline_id`` (a zero embedding would be
        # a singular point of the RMS norm, and integrated gradients would not converge).
        base_ids = torch.full_like(inputs, baseline_id if baseline_id is not None else 0)
        base_ids[0, 0] = inputs[0, 0]  # the first token (BOS, the attention sink) stays
        baseline = embed(base_ids).detach().float() if baseline_id is not None else None
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    x = x.to(dtype).requires_grad_(True)
    baseline_x = torch.zeros_like(x) if baseline is None else baseline.to(dtype)
    gap = None
    if method == "input_x_gradient":
        attr = InputXGradient(forward).attribute(x)
    else:
        attr, delta = IntegratedGradients(forward).attribute(
            x, baselines=baseline_x, n_steps=max(4, min(int(steps), 64)),
            internal_batch_size=4, return_convergence_delta=True,
        )  # fmt: skip
        gap = float(delta.sum())
    model.train(was_training)
    per_token = attr[0].float().sum(dim=-1).detach().cpu().numpy()
    with torch.no_grad():
        value = float(forward(x.detach()))
        base = float(forward(baseline_x)) if method == "integrated_gradients" else None
    passes = "1 backward pass" if method == "input_x_gradient" else f"{steps} backward passes"
    values = [round(float(v), 5) for v in per_token]  # prompt, then the reply tokens fed
    return {
        "method": method,
        "attributions": values,
        "target_logprob": round(value, 5),
        "baseline_logprob": None if base is None else round(base, 5),
        "sum_of_attributions": round(float(sum(values)), 5),
        "completeness_gap": None if gap is None else round(gap, 5),
        "n_prompt": n_prompt,
        "seconds": round(time.perf_counter() - started, 3),
        "cost": f"{passes} over {len(full)} tokens",
    }
