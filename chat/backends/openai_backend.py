"""Any OpenAI-compatible engine as a backend: vLLM, llama.cpp's llama-server,
``python -m llama_cpp.server``, Ollama, TGI. How users outgrow one machine.

The server applies its own chat template and batches requests itself, so this
backend sends messages, streams the reply, and lets several generations run
at once (``--concurrency``). What a server offers is found out by asking it
(one-token probes when it is first reached): several candidates through
``n`` (else one request per candidate), token log-probabilities. A server
that is down or answers garbage is a clear error for that request only; the
next request tries again, so a server that comes back is used at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.errors import ChatStudioError, ModelLoadError
from chat.probs import TokenInfo, TokenProb
from chat.prompting import render_transcript
from chat.settings import MAX_CANDIDATES

DEFAULT_N_CTX = 4096
BYTES_PER_TOKEN = 3  # a conservative estimate: English averages about 4 bytes a token
MESSAGE_OVERHEAD = 8  # template tokens around each message, estimated
NO_ATTENTION = "the OpenAI protocol carries no attention weights"
NO_SCORING = "the OpenAI protocol returns no log-probabilities for a given text"
NO_NEXT = (
    "the OpenAI chat protocol gives alternatives only for the tokens the server generates, "
    "not a distribution after any text"
)
NO_FORCING = "the OpenAI protocol cannot make a reply start with chosen tokens"
NO_SAMPLER = "the server does not report what its sampler kept"


class EngineUnavailable(ChatStudioError):
    """The remote engine is down, too slow, or answered something unusable."""


class OpenAIBackend:
    """A model served by an OpenAI-compatible HTTP engine."""

    sampler_order = ("penalty", "top_k", "top_p", "temperature")
    penalty_last_n = 64

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        n_ctx: int | None = None,
        timeout: float = 60.0,
    ):
        from openai import OpenAI

        self.base_url = base_url.rstrip("/")
        self.client = OpenAI(
            base_url=self.base_url, api_key=api_key or "none", timeout=timeout, max_retries=0
        )
        self.requested_model = model
        self.model = model or ""
        self._extras = True  # send top_k / repetition penalties until the server refuses them
        self._lock = threading.Lock()
        self._probed = False
        self.n_ctx = n_ctx or DEFAULT_N_CTX
        self.capabilities = _capabilities(logprobs=False, candidates=MAX_CANDIDATES)
        self.info = self._info()
        try:
            self.refresh()
        except EngineUnavailable as exc:  # start anyway: the server may come up later
            self.capabilities = _capabilities(False, MAX_CANDIDATES, startup_error=str(exc))

    @property
    def startup_error(self) -> str | None:
        """Why the engine could not be reached at start (None once it answered)."""
        return self.capabilities.startup_error

    def close(self) -> None:
        """Close the HTTP client's connections (the engine itself runs on)."""
        self.client.close()

    def _info(self) -> ModelInfo:
        return ModelInfo(
            model=self.model or "(unknown)",
            backend="openai",
            device=f"remote {self.base_url}",
            n_ctx=self.n_ctx,
            chat_template=True,
        )

    # -- what the server offers ---------------------------------------------------------

    def models(self) -> list[str]:
        """The models the server lists (``GET /v1/models``)."""
        with self._errors("list its models"):
            return [m.id for m in self.client.models.list()]

    def refresh(self) -> None:
        """Pick the model and probe what the server can do (once it answers)."""
        names = self.models()
        if self.requested_model and names and self.requested_model not in names:
            raise ModelLoadError(
                f"The engine at {self.base_url} has no model {self.requested_model!r}; it "
                f"serves: {', '.join(names)}. Pass one of them as --openai-model."
            )
        self.model = self.requested_model or (names[0] if names else "default")
        self._probe()
        self.info = self._info()

    def _probe(self) -> None:
        """One-token requests: does the server return log-probabilities, several choices?"""
        msgs = [{"role": "user", "content": "Hi"}]
        logprobs = candidates = False
        try:
            r = self.client.chat.completions.create(
                model=self.model, messages=msgs, max_tokens=1, logprobs=True, top_logprobs=2
            )
            logprobs = bool(r.choices and r.choices[0].logprobs and r.choices[0].logprobs.content)
            r = self.client.chat.completions.create(
                model=self.model, messages=msgs, max_tokens=1, temperature=1.0, n=2
            )
            candidates = len(r.choices) == 2
        except Exception:  # a server that refuses a probe simply lacks the feature
            pass
        self._n = candidates  # else several candidates are several requests
        self.capabilities = _capabilities(logprobs, MAX_CANDIDATES)
        self._probed = True

    # -- prompt side (the server renders the template) -------------------------------------

    def render(self, messages: list[dict]) -> str:
        """A readable transcript of the messages (the server applies its own template)."""
        return render_transcript(messages)

    def stop_strings(self) -> list[str]:
        """None: the server's chat template ends replies itself."""
        return []

    def count_tokens(self, prompt: str) -> int:
        """An estimate (the server's tokenizer is not at hand): bytes / 3, plus overheads."""
        lines = prompt.count("\n") + 1
        return len(prompt.encode("utf-8")) // BYTES_PER_TOKEN + MESSAGE_OVERHEAD * lines // 2

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` tokens' worth of ``text`` (by the same estimate)."""
        data = text.encode("utf-8")[: max(0, max_tokens) * BYTES_PER_TOKEN]
        return data.decode("utf-8", errors="ignore")

    def piece(self, token_id: int) -> str:
        """Token ids are not shared by the server: nothing to show."""
        return ""

    # -- generation --------------------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Stream the reply (several candidates: ``n`` if the server has it, else in turn)."""
        if not self._probed:
            self.refresh()
        s = request.settings
        n = s.num_return_sequences
        if n > 1 and not self._n:
            for i in range(n):
                yield from self._stream(request, cancel, 1, i, request.seed + i)
                if cancel.is_set():
                    return
            return
        yield from self._stream(request, cancel, n, 0, request.seed)

    def _stream(self, request, cancel, n: int, first: int, seed: int) -> Iterator[Delta]:
        s = request.settings
        body = {
            "model": self.model,
            "messages": request.messages,
            "stream": True,
            "max_tokens": request.max_new_tokens,
            "temperature": 0.0 if s.strategy == "greedy" else s.temperature,
            "top_p": 1.0 if s.strategy == "greedy" else s.top_p,
            "seed": seed,
            "n": n,
        }
        if request.stop:
            body["stop"] = list(request.stop)[:4]
        if request.top_logprobs:
            body.update(logprobs=True, top_logprobs=min(request.top_logprobs, 20))
        if self._extras:
            body["extra_body"] = {
                "top_k": s.top_k,
                "repeat_penalty": s.repetition_penalty,
                "repetition_penalty": s.repetition_penalty,
                "min_p": 0.0,
            }
        stream = self._open(body)
        finished = [False] * n
        try:
            for chunk in stream:
                if cancel.is_set():
                    break
                if getattr(chunk, "model", None) and chunk.model != self.model:
                    self.served_model = chunk.model
                for choice in chunk.choices or []:
                    i = choice.index
                    yield from _deltas(first + i, choice)
                    if choice.finish_reason:
                        finished[i] = True
                        yield Delta(first + i, "", finish_reason=_finish(choice.finish_reason))
        except Exception as exc:
            if cancel.is_set():
                return
            raise EngineUnavailable(
                f"The engine at {self.base_url} broke off the reply ({_reason(exc)}). "
                "Try again; if it keeps happening, check the engine's own log."
            ) from None
        finally:
            stream.close()  # closes the HTTP connection: the server stops generating
        for i, done in enumerate(finished):
            if not done:
                yield Delta(first + i, "", finish_reason="cancelled" if cancel.is_set() else "stop")

    def _open(self, body: dict):
        """Start the streaming request; drop options a server refuses, once."""
        from openai import BadRequestError

        with self._errors("answer"):
            try:
                return self.client.chat.completions.create(**body)
            except BadRequestError as exc:
                if "extra_body" not in body:
                    raise
                self._extras = False  # a strict server: plain OpenAI parameters only
                body = {k: v for k, v in body.items() if k != "extra_body"}
                try:
                    return self.client.chat.completions.create(**body)
                except BadRequestError:
                    raise exc from None

    def _errors(self, what: str):
        return _EngineErrors(self.base_url, what)


class _EngineErrors:
    """Turns the openai client's exceptions into one clear ``EngineUnavailable``."""

    def __init__(self, url: str, what: str):
        self.url, self.what = url, what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, ChatStudioError):
            return False
        import openai

        if isinstance(exc, openai.APITimeoutError):
            msg = f"The engine at {self.url} did not {self.what} in time. Is it overloaded?"
        elif isinstance(exc, openai.APIConnectionError):
            msg = (
                f"The engine at {self.url} cannot be reached ({_reason(exc)}). Start it, or "
                "check --openai-base-url; the next message tries again."
            )
        elif isinstance(exc, openai.APIStatusError):
            msg = f"The engine at {self.url} refused to {self.what}: HTTP {exc.status_code} "
            msg += f"{_reason(exc)}"
        else:
            msg = (
                f"The engine at {self.url} sent something that is not an OpenAI-compatible "
                f"answer ({_reason(exc)})."
            )
        raise EngineUnavailable(msg) from None


def _deltas(index: int, choice) -> list[Delta]:
    """One delta per token when the server sent log-probabilities, else one for the text."""
    text = (choice.delta.content or "") if choice.delta else ""
    lp = getattr(choice, "logprobs", None)
    content = getattr(lp, "content", None) if lp else None
    if not content:
        return [Delta(index, text, tokens=1)] if text else []
    out = []
    for t in content:
        top = [TokenProb(-1, a.token, float(a.logprob)) for a in (t.top_logprobs or [])]
        info = TokenInfo(-1, t.token, float(t.logprob), top)
        out.append(Delta(index, t.token, tokens=1, token=info))
    joined = "".join(t.token for t in content)
    if joined != text and text:  # tokens that do not spell the text: trust the text
        out[-1].text += text[len(joined) :] if text.startswith(joined) else ""
    return out


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _capabilities(
    logprobs: bool, candidates: int, startup_error: str | None = None
) -> Capabilities:
    return Capabilities(
        frozenset({"greedy", "sample"}),
        candidates,
        logprobs=logprobs,
        remote=True,
        startup_error=startup_error,
        missing={
            "logprobs": "the server returns no token log-probabilities",
            "sampler_probs": NO_SAMPLER,
            "force_prefix": NO_FORCING,
            "next_token": NO_NEXT,
            "scoring": NO_SCORING,
            "attention": NO_ATTENTION,
            "beam": "OpenAI-compatible servers offer no beam search through this API",
        },
    )


def wait_until_up(backend: OpenAIBackend, timeout: float) -> bool:
    """Poll the server until it lists its models (for a child server just started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            backend.refresh()
            return True
        except EngineUnavailable:
            time.sleep(0.2)
    return False
