"""Training data: JSONL in three shapes (and the app's own feedback rows) become deduplicated,
split, length-checked examples, tokenized exactly as the trainer reads them.

- SFT rows are ``{"messages": [...]}`` whose last message is the assistant's reply; the loss
  falls on assistant tokens only (what the chat template renders for each assistant turn,
  its end-of-turn marker included, so the model also learns to stop).
- Preference rows are ``{"prompt": [messages], "chosen": str, "rejected": str}``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field

from training.dedup import NearIndex, signature
from training.errors import TrainingError

MAX_ERRORS = 50  # bad lines reported one by one; the rest are counted
ROLES = ("system", "user", "assistant")
# Used when a tokenizer has no chat template (GPT-2 and other base models).
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


@dataclass
class ParseResult:
    """The rows that loaded and one "line N: what is wrong" per bad line."""

    rows: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class TrainData:
    """Examples ready for a trainer, and what happened to the others.

    ``train``/``eval`` hold normalised rows; for SFT, ``train_features``/``eval_features`` hold
    ``{"input_ids", "labels"}`` with -100 on the tokens that carry no loss.
    """

    kind: str  # "sft" or "preference"
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    train_features: list[dict] = field(default_factory=list)
    eval_features: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def summary(self) -> str:
        """``40 examples: 36 train, 4 eval; dropped 3 duplicate(s), 1 near, 0 too long``."""
        c = self.counts
        return (
            f"{c['loaded']} examples: {c['train']} train, {c['eval']} eval; dropped "
            f"{c['duplicates']} duplicate(s), {c['near_duplicates']} near duplicate(s), "
            f"{c['dropped']} too long; {c['truncated']} truncated"
        )


def preference_kind(kind: str) -> bool:
    """Whether ``kind`` (sft, preference, reward, dpo) reads preference pairs."""
    if kind not in ("sft", "preference", "reward", "dpo"):
        raise TrainingError(f"kind: choose sft, preference, reward or dpo, got {kind!r}.")
    return kind != "sft"


# -- rows ------------------------------------------------------------------------------------


def _messages(value, what: str) -> list[dict]:
    """A list of ``{"role", "content"}`` messages, or a plain text as one user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{what} must be a text or a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ValueError(f"{what}[{i}] must be an object with a text content")
        if m.get("role") not in ROLES:
            raise ValueError(f"{what}[{i}].role must be one of {', '.join(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _reply(value, what: str) -> str:
    """The assistant's text from a string or a list of one or more assistant messages."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        if any(m.get("role", "assistant") != "assistant" for m in value):
            raise ValueError(f"{what} must hold assistant messages only")
        if not all(isinstance(m.get("content"), str) for m in value):
            raise ValueError(f"{what} messages must have a text content")
        text = "".join(m["content"] for m in value)
    else:
        raise ValueError(f"{what} must be a text or a list of assistant messages")
    if not text.strip():
        raise ValueError(f"{what} is empty")
    return text


def normalise_row(row, kind: str) -> dict:
    """One row in the trainer's shape; ``ValueError`` says what is wrong with it."""
    if not isinstance(row, dict):
        raise ValueError("each line must be a JSON object")
    if preference_kind(kind):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(
                f"missing {', '.join(missing)}; a preference row is "
                '{"prompt": ..., "chosen": ..., "rejected": ...}'
            )
        prompt = _messages(row["prompt"], "prompt")
        chosen, rejected = _reply(row["chosen"], "chosen"), _reply(row["rejected"], "rejected")
        if chosen == rejected:
            raise ValueError("chosen and rejected are the same text")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if "messages" in row:
        messages = _messages(row["messages"], "messages")
    elif "prompt" in row and "completion" in row:
        messages = _messages(row["prompt"], "prompt")
        messages.append({"role": "assistant", "content": _reply(row["completion"], "completion")})
    elif "chosen" in row:
        raise ValueError("this is a preference row (prompt, chosen, rejected); load it for DPO "
                         "or a reward model, or send {\"prompt\", \"completion\"}")  # fmt: skip
    else:
        raise ValueError('send {"prompt": ..., "completion": ...} or {"messages": [...]}')
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise ValueError("the last message must be the assistant's (non-empty) reply")
    return {"messages": messages}


def normalise_rows(rows: list, kind: str) -> list[dict]:
    """Rows in the trainer's shape, from any accepted shape (the app's own feedback rows too).

    The app writes each SFT reply twice (as messages and as prompt/completion): a row equal to
    one of the other shape is that twin and is kept once. Raises ``TrainingError`` on a bad row.
    """
    out, shapes = [], {}
    for i, row in enumerate(rows):
        try:
            norm = normalise_row(row, kind)
        except ValueError as exc:
            raise TrainingError(f"row {i + 1}: {exc}.") from None
        key = json.dumps(norm, sort_keys=True)
        shape = "messages" if isinstance(row, dict) and "messages" in row else "pair"
        seen = shapes.setdefault(key, set())
        if seen and shape not in seen:
            seen.add(shape)
            continue  # the twin of a row already kept
        seen.add(shape)
        out.append(norm)
    return out


def parse_jsonl(text: str, kind: str) -> ParseResult:
    """Rows from JSONL text; each bad line is reported by number and the others still load."""
    result = ParseResult()
    bad = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
        else:
            try:
                result.rows.append(normalise_row(row, kind))
                continue
            except ValueError as exc:
                problem = str(exc)
        bad += 1
        if bad <= MAX_ERRORS:
            result.errors.append(f"line {number}: {problem}")
    if bad > MAX_ERRORS:
        result.errors.append(f"... and {bad - MAX_ERRORS} more bad line(s)")
    return result


# -- tokens ----------------------------------------------------------------------------------


def load_tokenizer(model: str):
    """The tokenizer ``load_base(model)`` would give (chat template, pad token), without the
    weights: enough to build a dataset and its preview in the app's process."""
    import transformers

    from chat.backends.hf_loading import _gguf_chat_template, _load, _locate

    where, gguf_file, local = _locate(model, None)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = _load(transformers.AutoTokenizer, model, where, local, **extra)
    if gguf_file and not tokenizer.chat_template and local:
        from pathlib import Path

        template = _gguf_chat_template(Path(where) / gguf_file)
        if template:
            tokenizer.chat_template = template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def ensure_template(tokenizer) -> None:
    """Give a tokenizer without a chat template the plain fallback one."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages``."""
    ensure_template(tokenizer)
    if not messages:
        return ""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )


def _assistant_spans(tokenizer, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Character spans of ``full`` that the assistant turns render to (end marker included)."""
    spans, start = [], 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if full.startswith(through) and through.startswith(before) and len(before) >= start:
            spans.append((len(before), len(through)))
            start = len(through)
            continue
        # A template that renders earlier turns differently later: find the reply's text.
        at = full.find(m["content"], start)
        if at >= 0:
            spans.append((at, at + len(m["content"])))
            start = at + len(m["content"])
    return spans


def encode(tokenizer, messages: list[dict]) -> dict:
    """``{"text", "input_ids", "loss_mask", "pieces"}`` for one conversation.

    ``pieces`` cover the text exactly (joined they give it back), one per token.
    """
    full = render(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    spans = _assistant_spans(tokenizer, messages, full)
    mask = [any(s < e2 and e > s2 for s2, e2 in spans) for s, e in offsets]
    starts = [s for s, _ in offsets]
    pieces = []
    for k in range(len(ids)):
        a = 0 if k == 0 else starts[k]
        b = starts[k + 1] if k + 1 < len(ids) else len(full)
        pieces.append(full[a:b])
    return {"text": full, "input_ids": list(ids), "loss_mask": mask, "pieces": pieces}


def preview(tokenizer, row: dict, max_length: int) -> dict:
    """One example as the model will be trained on it: ``{"text", "tokens": [[piece,
    carries_loss], ...], "n_tokens", "truncated"}`` (a preference row shows prompt + chosen)."""
    row = normalise_row(row, "preference" if "chosen" in row else "sft")
    if "chosen" in row:
        messages = row["prompt"] + [{"role": "assistant", "content": row["chosen"]}]
    else:
        messages = row["messages"]
    enc = encode(tokenizer, messages)
    n = len(enc["input_ids"])
    keep = min(n, max_length)
    tokens = [[p, bool(m)] for p, m in zip(enc["pieces"][:keep], enc["loss_mask"][:keep],
                                          strict=True)]  # fmt: skip
    text = enc["text"] if keep == n else "".join(p for p, _ in tokens)
    return {"text": text, "tokens": tokens, "n_tokens": n, "truncated": n > max_length}


def sft_features(tokenizer, messages: list[dict], max_length: int) -> tuple[dict | None, bool]:
    """``({"input_ids", "labels"}, overlong)``; features are None when no loss token fits."""
    enc = encode(tokenizer, messages)
    ids, mask = enc["input_ids"][:max_length], enc["loss_mask"][:max_length]
    labels = [t if m else -100 for t, m in zip(ids, mask, strict=True)]
    overlong = len(enc["input_ids"]) > max_length
    if all(x == -100 for x in labels):
        return None, overlong
    return {"input_ids": ids, "labels": labels}, overlong


def pair_length(tokenizer, row: dict) -> int:
    """Tokens of the longer of prompt + chosen and prompt + rejected."""
    texts = [render(tokenizer, row["prompt"] + [{"role": "assistant", "content": r}])
             for r in (row["chosen"], row["rejected"])]  # fmt: skip
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


# -- dataset ---------------------------------------------------------------------------------


def _text(row: dict) -> str:
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"])
    return "\n".join([*(m["content"] for m in row["prompt"]), row["chosen"], row["rejected"]])


def dedupe(rows: list[dict]) -> tuple[list[dict], int, int]:
    """``(kept, exact, near)``: exact duplicates (same normalised text) and near ones
    (similarity ratio 0.9 or more, ``training.dedup``) dropped, first kept."""
    seen: set[str] = set()
    index = NearIndex()
    kept, exact, near = [], 0, 0
    for row in rows:
        text = " ".join(_PUNCT.sub(" ", _text(row).lower()).split())
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            exact += 1
            continue
        sig = signature(text)
        if index.find(text, sig):
            near += 1
            continue
        seen.add(digest)
        index.add(text, sig)
        kept.append(row)
    return kept, exact, near


def split(rows: list[dict], eval_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded held-out split: at least one eval row when asked for and two rows exist."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(rows) * eval_share)
    if eval_share > 0 and len(rows) >= 2:
        n_eval = max(1, n_eval)
    n_eval = min(n_eval, len(rows) - 1)
    held = set(order[:n_eval])
    train = [r for i, r in enumerate(rows) if i not in held]
    return train, [r for i, r in enumerate(rows) if i in held]


def build_dataset(rows: list, kind: str, settings, tokenizer) -> TrainData:
    """Deduplicated, split, length-checked examples (``settings``: a ``TrainSettings``).

    Raises ``TrainingError`` for an empty dataset, or a reward/DPO run without pairs.
    """
    pref = preference_kind(kind)
    normal = normalise_rows(list(rows), "preference" if pref else "sft")
    if not normal:
        raise TrainingError(
            "No preference pairs to train on: like one reply and dislike or retry another "
            "(or pick a candidate), or upload JSONL rows of {prompt, chosen, rejected}."
            if pref
            else "No examples to train on: like some replies in the chat, or upload JSONL "
            "rows of {prompt, completion} or {messages}."
        )
    kept, exact, near = dedupe(normal)
    counts = {"loaded": len(normal), "duplicates": exact, "near_duplicates": near,
              "truncated": 0, "dropped": 0}  # fmt: skip
    data = TrainData("preference" if pref else "sft")
    usable, features = [], []
    for row in kept:
        if pref:
            overlong = pair_length(tokenizer, row) > settings.max_length
            feats = None
        else:
            feats, overlong = sft_features(tokenizer, row["messages"], settings.max_length)
            if feats is None:  # the prompt alone fills max_length: nothing left to learn
                counts["dropped"] += 1
                continue
        if overlong and settings.overlong == "drop":
            counts["dropped"] += 1
            continue
        counts["truncated"] += overlong
        usable.append(row)
        features.append(feats)
    if not usable:
        raise TrainingError(
            f"Every example is longer than max_length ({settings.max_length} tokens); raise "
            "max_length or choose to truncate long examples."
        )
    index = {id(r): f for r, f in zip(usable, features, strict=True)}
    data.train, data.eval = split(usable, settings.eval_share, settings.seed)
    if not pref:
        data.train_features = [index[id(r)] for r in data.train]
        data.eval_features = [index[id(r)] for r in data.eval]
    counts["train"], counts["eval"] = len(data.train), len(data.eval)
    data.counts = counts
    return data
