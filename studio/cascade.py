"""LLM cascade: the small local model answers first; an unsure answer goes to a bigger one.

The local reply's confidence (its mean token probability, from the Inspect
work) decides: below the threshold, the same conversation is sent to a
remote OpenAI-compatible engine, whose answer replaces the local one. Each
reply says which model answered, and why.
"""

from __future__ import annotations

from collections.abc import Iterator

from chat.engine import ChatEngine, TurnResult


class Cascade:
    """A second, larger model consulted when the local one is unsure."""

    def __init__(self, engine: ChatEngine, threshold: float = 0.5):
        self.engine = engine
        self.threshold = threshold

    @property
    def name(self) -> str:
        """``model (where)`` of the remote model."""
        info = self.engine.backend.info
        return f"{info.model} ({info.device})"

    def run(self, local: Iterator[TurnResult], again, local_name: str) -> Iterator[TurnResult]:
        """Stream the local turn; if its confidence is below the threshold, stream ``again()``.

        ``again(engine)`` runs the same turn on the remote engine.
        """
        final = None
        for final in local:
            if not final.done:  # the local final answer waits for the verdict
                yield final
        if final is None:
            return
        conf = final.stats.get("confidence")
        if conf is None:
            final.stats["cascade"] = {"escalated": False, "reason": "no token probabilities"}
            yield final
            return
        prob = conf["mean_prob"]
        summary = {
            "threshold": self.threshold,
            "local_mean_prob": prob,
            "local_reply": final.reply,
            "local_model": local_name,
        }
        if prob >= self.threshold:
            final.stats["cascade"] = summary | {
                "escalated": False,
                "reason": f"mean token probability {prob:.2f} >= {self.threshold:.2f}",
            }
            final.stats["answered_by"] = local_name
            yield final
            return
        reason = f"mean token probability {prob:.2f} < {self.threshold:.2f}"
        for result in again(self.engine):
            result.stats["answered_by"] = self.name
            if result.done:
                result.stats["cascade"] = summary | {"escalated": True, "reason": reason}
                result.notices.append(
                    f"The local model ({local_name}) was unsure ({reason}); {self.name} "
                    "answered instead."
                )
            yield result
