"""Before and after: what training changed, seen through the base model and the tuned one.

Three views, all plain data: the two replies side by side (same prompt, seed and
settings, so the weights are the only difference); the tokens of one reply whose
probability moved most between the two models (the chat's per-token probability view,
run on both); and the perplexity of the held-out rows' answers under each. A reward
model, where one exists, scores both replies.

Both backends are chat backends (``chat.backends``) over the same tokenizer, e.g. the
base model and ``TransformersBackend(..., adapter=folder)``.
"""

from __future__ import annotations

import math

import numpy as np

from chat.errors import InputError
from chat.settings import DecodingSettings

DEFAULT_SEED = 0  # both models must draw the same random numbers when sampling


def split_prompt(item) -> tuple[list[dict], str | None]:
    """``(prompt messages, reference answer or None)`` of a prompt given as text, a list of
    messages, or an SFT row ``{"messages": [..., assistant]}``."""
    if isinstance(item, str):
        return [{"role": "user", "content": item}], None
    messages = item.get("messages") if isinstance(item, dict) else item
    if not messages or not isinstance(messages, list):
        raise InputError("Each prompt must be text, a list of messages or a {messages} row.")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def compare_replies(base, tuned, prompts: list, settings: DecodingSettings | dict | None = None,
                    reward=None) -> list[dict]:  # fmt: skip
    """One row per prompt: ``{"prompt", "messages", "reference", "base", "tuned", "same",
    "seed"}`` (plus ``base_reward``/``tuned_reward`` when ``reward`` has
    ``.score(prompt_messages, reply)``). Both replies use the same seed and settings."""
    from chat.engine import ChatEngine, TurnRequest

    if isinstance(settings, dict) or settings is None:
        settings = DecodingSettings(**(settings or {}))
    if settings.seed is None:
        settings = settings.model_copy(update={"seed": DEFAULT_SEED})
    engines = {"base": ChatEngine(base), "tuned": ChatEngine(tuned)}
    rows = []
    for item in prompts:
        messages, reference = split_prompt(item)
        if messages[-1]["role"] != "user":
            raise InputError("A prompt must end with a user message.")
        prefix = [m for m in messages[:-1] if m["role"] == "system"]
        history = [m for m in messages[:-1] if m["role"] != "system"]
        row = {"prompt": messages[-1]["content"], "messages": messages, "reference": reference}
        for side, engine in engines.items():
            *_, last = engine.stream_turn(
                TurnRequest(messages[-1]["content"], history, prefix, settings)
            )
            row[side] = last.reply
        row["same"] = row["base"] == row["tuned"]
        row["seed"] = settings.seed
        if reward is not None:
            row["base_reward"] = round(float(reward.score(messages, row["base"])), 4)
            row["tuned_reward"] = round(float(reward.score(messages, row["tuned"])), 4)
        rows.append(row)
    return rows


def reply_logprobs(
    backend, prompt_messages: list[dict], reply: str
) -> tuple[list[int], np.ndarray]:
    """``(reply token ids, their log-probabilities)`` under ``backend`` after the chat-templated
    prompt: the per-token probabilities the chat's token view shows. A reply that runs past
    the model's window is scored as far as the window reaches."""
    prompt = backend.render(prompt_messages)
    prompt_ids = backend.tokenize(prompt)
    ids = backend.tokenize(prompt + reply)
    n = _common_prefix(prompt_ids, ids)
    if n >= len(ids):
        raise InputError("The reply is empty: there is no token to compare.")
    if n >= backend.info.n_ctx:
        raise InputError(
            f"The prompt alone is {n} tokens, the model's whole window of "
            f"{backend.info.n_ctx}; compare with a shorter prompt."
        )
    ids = ids[: backend.info.n_ctx]  # a reply longer than the window: the part that fits
    lps, _ = backend.score(ids, first=max(1, n))
    return ids[max(1, n) :], np.asarray(lps, dtype=np.float64)


def changed_tokens(base, tuned, prompt_messages: list[dict], reply: str, k: int = 10) -> dict:
    """Each reply token's probability under both models, and the ``k`` that moved most.

    ``{"tokens": [{"text", "id", "base", "tuned", "change", "base_logprob",
    "tuned_logprob"}...], "most_changed": [...k of them, largest |change| first],
    "base_logprob", "tuned_logprob"}`` (the last two: the whole reply's, summed).
    """
    ids, base_lp = reply_logprobs(base, prompt_messages, reply)
    tuned_ids, tuned_lp = reply_logprobs(tuned, prompt_messages, reply)
    if tuned_ids != ids:
        raise InputError(
            "The two models split the text into different tokens; compare an adapter with the "
            "base model it was trained on."
        )
    tokens = []
    for i, (tid, b, t) in enumerate(zip(ids, base_lp, tuned_lp, strict=True)):
        pb, pt = math.exp(b), math.exp(t)
        tokens.append(
            {"index": i, "text": base.piece(tid), "id": int(tid), "base": round(pb, 5),
             "tuned": round(pt, 5), "change": round(pt - pb, 5),
             "base_logprob": round(float(b), 5), "tuned_logprob": round(float(t), 5)}
        )  # fmt: skip
    moved = sorted(tokens, key=lambda x: abs(x["change"]), reverse=True)[: max(0, k)]
    return {
        "tokens": tokens,
        "most_changed": moved,
        "base_logprob": round(float(base_lp.sum()), 4),
        "tuned_logprob": round(float(tuned_lp.sum()), 4),
    }


def perplexity_before_after(base, tuned, eval_rows: list) -> dict:
    """Perplexity of the held-out answers (their assistant tokens, after their prompts) under
    each model: ``{"base", "tuned", "change", "tokens", "rows": [{"prompt", "base",
    "tuned"}...]}``. Lower is better: the tuned model finds those answers less surprising."""
    per_row, totals = [], {"base": [], "tuned": []}
    for row in eval_rows:
        messages, answer = split_prompt(row)
        if not answer:
            continue  # a row without an answer has nothing to score
        out = {"prompt": messages[-1]["content"]}
        for side, backend in (("base", base), ("tuned", tuned)):
            _, lps = reply_logprobs(backend, messages, answer)
            totals[side].append(lps)
            out[side] = round(math.exp(-float(lps.mean())), 4)
        per_row.append(out)
    if not per_row:
        raise InputError("No held-out rows with an answer to score; add more examples.")
    result = {"rows": per_row, "tokens": int(sum(len(x) for x in totals["base"]))}
    for side, parts in totals.items():
        result[side] = round(math.exp(-float(np.concatenate(parts).mean())), 4)
    result["change"] = round(result["tuned"] - result["base"], 4)
    return result


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
