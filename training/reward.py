"""The reward model: the base model's body with a one-number head, trained on preference pairs
(the recipe's second step). ``RewardScorer`` scores a reply to a prompt; ranking candidates by
that score is "best of n by reward", the simplest use of a reward model.
"""

from __future__ import annotations

from pathlib import Path

from training.adapters import read_meta
from training.data import render
from training.errors import TrainingError


def seq_cls_for(causal, adapter_dir: Path):
    """The sequence-classification model a reward adapter was trained on, from ``causal``."""
    from transformers import AutoTokenizer

    from training.run import seq_cls_from

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return seq_cls_from(causal, tokenizer)


class RewardScorer:
    """A trained reward model, ready to score replies."""

    def __init__(self, model, tokenizer, meta: dict, max_length: int = 1024):
        self.model, self.tokenizer, self.meta = model, tokenizer, meta
        self.max_length = max_length

    @classmethod
    def load(cls, adapter_dir: Path, base_model=None) -> RewardScorer:
        """The reward adapter at ``adapter_dir`` on its base model (loaded from the meta's
        ``base_model`` unless a loaded causal model is given)."""
        from transformers import AutoTokenizer

        from training.adapters import load_adapter

        adapter_dir = Path(adapter_dir)
        meta = read_meta(adapter_dir)
        if meta.get("kind") != "reward":
            raise TrainingError(
                f"{meta.get('name', adapter_dir.name)} is a {meta.get('kind')} adapter, not a "
                "reward model; train one with kind=reward on preference pairs."
            )
        model = load_adapter(base_model or meta["base_model"], adapter_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        max_length = meta.get("settings", {}).get("max_length", 1024)
        return cls(model, tokenizer, meta, max_length)

    def score(self, prompt_messages: list[dict] | str, reply: str) -> float:
        """The reward of ``reply`` after ``prompt_messages`` (a text is one user message)."""
        return self.scores(prompt_messages, [reply])[0]

    def scores(self, prompt_messages: list[dict] | str, replies: list[str]) -> list[float]:
        """The reward of each reply to the same prompt."""
        import torch

        if isinstance(prompt_messages, str):
            prompt_messages = [{"role": "user", "content": prompt_messages}]
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt_messages]
        out = []
        for reply in replies:
            text = render(self.tokenizer, prompt + [{"role": "assistant", "content": reply}])
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][-self.max_length :]
            with torch.no_grad():
                logits = self.model(input_ids=torch.tensor([ids])).logits
            out.append(float(logits[0, 0]))
        return out

    def best_of(self, prompt_messages: list[dict] | str, replies: list[str]) -> tuple[int, list]:
        """``(index of the best reply, every score)``: best of n by reward."""
        s = self.scores(prompt_messages, replies)
        return max(range(len(s)), key=s.__getitem__), s


def pairwise_accuracy(scorer: RewardScorer, pairs: list[dict]) -> float:
    """Share of ``{"prompt", "chosen", "rejected"}`` pairs whose chosen reply scores higher."""
    if not pairs:
        raise TrainingError("No held-out pairs to measure the reward model on; add more pairs.")
    right = 0
    for p in pairs:
        chosen, rejected = scorer.scores(p["prompt"], [p["chosen"], p["rejected"]])
        right += chosen > rejected
    return right / len(pairs)
