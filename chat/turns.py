"""What a chat turn is made of: the request the engine runs, the snapshots it streams, and
a turn prepared for the backend (``chat.engine`` runs them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from chat.backends.base import GenerationRequest
from chat.inspection import DEFAULT_CONFIDENCE, confidence
from chat.progress import TurnProgress
from chat.prompting import FittedPrompt
from chat.settings import DecodingSettings


@dataclass
class TurnResult:
    """A snapshot of a turn in progress (``done`` False) or finished."""

    reply: str
    candidates: list[str]
    prompt_messages: list[dict]
    stats: dict
    settings: dict
    notices: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    done: bool = False
    tokens: list[list[dict]] | None = None  # per candidate, with top_logprobs
    prompt: str = ""  # the exact prompt text (final snapshot only)
    parts: dict = field(default_factory=dict)  # how the prompt was built, for its anatomy
    # with retrieval, on the final snapshot: which passage supports each reply sentence,
    # and the passage sentence that best answers the question (retrieval.attribution)
    attribution: list[dict] = field(default_factory=list)
    extractive: dict | None = None

    def to_api(self) -> dict:
        """The stable dict returned by the ``/chat`` endpoint."""
        data = asdict(self)
        for internal in ("done", "prompt", "parts"):
            data.pop(internal)
        if data["tokens"] is None:
            data.pop("tokens")
        return data


@dataclass
class TurnRequest:
    """One chat turn as the engine runs it.

    ``prefix`` is the persona's system prompt and few-shot examples; ``suffix``
    messages follow the new message (post-history instructions). ``passages``
    are retrieved document chunks (best first) to answer from, laid out by
    ``prompt_format`` (``chat.rag_formats``; "auto" picks by whether the model
    has a chat template). ``top_logprobs`` > 0 records each candidate's tokens
    with their probabilities and alternatives (and a confidence summary, low
    under ``confidence_threshold``); ``forced`` token ids start the reply (a
    branch). ``started_at`` (a ``time.perf_counter()``) makes the time to first
    token include work done before, such as retrieval; ``max_seconds`` stops a
    generation that runs longer (finish reason ``time_limit``).
    """

    message: str
    history: list[dict] | None
    prefix: list[dict]
    settings: DecodingSettings
    passages: list | None = None
    suffix: list[dict] | None = None
    prompt_format: str = "auto"
    top_logprobs: int = 0
    forced: list[int] | None = None
    confidence_threshold: float = DEFAULT_CONFIDENCE
    started_at: float | None = None
    max_seconds: float | None = None


@dataclass
class PreparedTurn:
    """A turn ready to generate: the backend's request, and what its snapshots report."""

    request: GenerationRequest
    fitted: FittedPrompt
    stats: dict
    parts: dict
    sources: list[dict]
    settings_used: dict
    sent: list[dict]  # the messages the prompt renders

    def snapshot(self, progress: TurnProgress, turn: TurnRequest, done: bool) -> TurnResult:
        """The turn as it stands: texts, stats and (when done) tokens and confidence."""
        progress.fill(self.stats, done)
        texts = progress.texts(done)
        result = TurnResult(
            reply=texts[0],
            candidates=texts,
            prompt_messages=[dict(m) for m in self.sent] if done else self.sent,
            stats=dict(self.stats),
            settings=dict(self.settings_used) if done else self.settings_used,
            notices=list(self.fitted.notices),
            sources=self.sources,
            done=done,
            prompt=self.fitted.prompt if done else "",
            parts=self.parts,
        )
        if done and turn.top_logprobs:
            result.tokens = progress.token_dicts()
            result.stats["confidence"] = confidence(progress.infos[0], turn.confidence_threshold)
        return result


def source_dict(number: int, passage) -> dict:
    """A retrieved passage as the API shows it, numbered as cited in the prompt."""
    return {
        "n": number,
        "text": passage.text,
        "source": passage.source,
        "page": passage.page,
        "section": passage.section,
        "chunk_index": passage.chunk_index,
        "score": round(float(passage.score), 4),
    }
