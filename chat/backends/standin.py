"""A stand-in model for tests: deterministic, instant, and able to do everything a backend can.

Registered as ``standin`` (``python main.py --backend standin``), like
simonw/llm's ``MockModel``: tests of the page's wiring, access control and
orchestration use it where a real model's words do not matter, and run in
milliseconds. Every test that needs what a real model says uses the bundled
GGUF instead.

The rule it follows: one token per character (printable ASCII, newline,
BOS/EOS; any other character reads as ``?``); a prompt ending in the
transcript's ``Assistant:`` is answered with ``echo: <the last user message>``
(see ``reply_for``). The logits of the next position are a fixed random
bigram table (seed 0) plus a large bonus for the character the rule wants
next, so greedy decoding, beam search and the sampler all act on real
distributions: greedy replies are exactly the rule's, sampled ones vary with
the seed and repeat with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from chat.backends.base import Capabilities, Delta, GenerationRequest, ModelInfo
from chat.errors import InputError
from chat.probs import LLAMA_CPP_ORDER, PENALTY_LAST_N, apply_sampler, log_softmax, token_info
from chat.prompting import TRANSCRIPT_STOPS, render_transcript
from chat.settings import MAX_CANDIDATES, STRATEGIES

BOS, EOS = 0, 1
VOCAB = ["<s>", "</s>", "\n", *map(chr, range(32, 127))]  # ids 0..97
_IDS = {c: i for i, c in enumerate(VOCAB) if i > EOS}
UNKNOWN = _IDS["?"]
RULE_BONUS = 8.0  # logits of the rule's next character: above any bigram difference
N_LAYERS, N_HEADS = 2, 2
ASSISTANT = "Assistant:"


def reply_for(prompt: str) -> str:
    """What the stand-in answers to a rendered ``prompt`` (greedy): ``echo: <last user turn>``."""
    user = ""
    for line in prompt.split("\n"):
        if line.startswith("User: "):
            user = line[len("User: ") :]
    return "echo: " + "".join(c if c in _IDS else "?" for c in user)


class StandinBackend:
    """The backend protocol, every inspection method and every capability, with no model."""

    sampler_order = LLAMA_CPP_ORDER
    penalty_last_n = PENALTY_LAST_N

    def __init__(
        self,
        name: str = "standin",
        n_ctx: int | None = None,
        parallel: int = 1,
        token_delay: float = 0.0,
    ):
        self.token_delay = token_delay  # seconds per generated token (to test waiting)
        self.info = ModelInfo(
            model=name,
            backend="standin",
            device="cpu",
            n_ctx=n_ctx or 2048,
            chat_template=False,
            n_vocab=len(VOCAB),
        )
        self.capabilities = Capabilities(
            strategies=frozenset(STRATEGIES),
            max_candidates=MAX_CANDIDATES,
            logprobs=True,
            sampler_probs=True,
            force_prefix=True,
            next_token=True,
            scoring=True,
            attention=True,
            internals=True,
            parallel=max(1, parallel),
        )
        rng = np.random.default_rng(0)
        self._bigram = rng.normal(0.0, 0.5, size=(len(VOCAB), len(VOCAB)))
        self._bigram[:, BOS] = -30.0  # nothing predicts the start of the text
        self._model = None  # the tiny torch model behind ``internals``, made when first asked
        self.closed = False

    def close(self) -> None:
        """Nothing is held but the tiny torch model, if one was made."""
        self._model = None
        self.closed = True

    # -- prompt side ---------------------------------------------------------------------

    def render(self, messages: list[dict]) -> str:
        """The plain ``User:``/``Assistant:`` transcript."""
        return render_transcript(messages)

    def stop_strings(self) -> list[str]:
        """The transcript's stops."""
        return list(TRANSCRIPT_STOPS)

    def count_tokens(self, prompt: str) -> int:
        """One token per character, plus BOS."""
        return len(prompt) + 1

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` characters."""
        return text[: max(0, max_tokens)]

    # -- inspection ----------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """BOS, then one id per character."""
        return [BOS] + [_IDS.get(c, UNKNOWN) for c in text]

    def piece(self, token_id: int) -> str:
        """The character (or ``<s>``/``</s>``) of ``token_id``."""
        (token_id,) = self.info.check_token_ids(token_id)
        return VOCAB[token_id]

    def _text(self, ids: list[int]) -> str:
        return "".join(VOCAB[i] for i in ids if i > EOS)

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """The bigram row of the last token, plus the rule's bonus for its next character."""
        ids = self.info.check_token_ids(ids, "ids")
        row = self._bigram[ids[-1] if ids else BOS].copy()
        text = self._text(ids)
        at = text.rfind(ASSISTANT)
        if at >= 0 and "\n" not in text[at:]:  # inside the reply: the rule says what comes next
            written = text[at + len(ASSISTANT) :].lstrip(" ")
            target = reply_for(text[:at])
            if target.startswith(written):
                want = _IDS[target[len(written)]] if len(written) < len(target) else EOS
                row[want] += RULE_BONUS
        return row

    def score(self, ids: list[int], first: int = 1):
        """``(logprobs, entropies)`` of each token from ``first`` on."""
        ids = self.info.check_token_ids(ids, "ids")
        lps, ents = [], []
        for i in range(max(1, first), len(ids)):
            lp = log_softmax(self.next_logits(ids[:i]))
            lps.append(lp[ids[i]])
            ents.append(float(-(np.exp(lp) * lp).sum()))
        return np.array(lps, dtype=np.float64), np.array(ents, dtype=np.float64)

    def attention(self, ids: list[int], layer: int):
        """Causal weights (heads x n x n): head h attends to earlier tokens fading by distance."""
        if not -N_LAYERS <= layer < N_LAYERS:
            last = N_LAYERS - 1
            raise InputError(
                f"layer: this model has {N_LAYERS} layers; choose 0 to {last} (-1: the last)"
            )
        n = len(ids)
        dist = np.arange(n)[:, None] - np.arange(n)[None, :]
        out = np.zeros((N_HEADS, n, n))
        for h in range(N_HEADS):
            w = np.where(dist >= 0, np.exp(-dist / (h + 1 + layer % N_LAYERS)), 0.0)
            out[h] = w / w.sum(axis=1, keepdims=True)
        return out, N_LAYERS

    def internals(self):
        """``(model, torch, device)``: a tiny Llama of fixed random weights over this vocabulary."""
        if self._model is None:
            import torch
            from transformers import LlamaConfig, LlamaForCausalLM

            config = LlamaConfig(
                vocab_size=len(VOCAB),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=N_LAYERS,
                num_attention_heads=N_HEADS,
                num_key_value_heads=N_HEADS,
                max_position_embeddings=self.info.n_ctx,
                bos_token_id=BOS,
                eos_token_id=EOS,
            )
            torch.manual_seed(0)
            self._model = LlamaForCausalLM(config).eval()
        import torch

        return self._model, torch, torch.device("cpu")

    # -- generation ----------------------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Each candidate in turn (seed, seed+1, ...; beams best first), one token per delta."""
        prompt = self.tokenize(request.prompt)
        forced = self.info.check_token_ids(request.forced, "reply_prefix_ids")
        s = request.settings
        if s.strategy == "beam":
            runs = self._beams(prompt + forced, request)
        else:
            runs = (
                self._sampled(prompt + forced, request, i) for i in range(s.num_return_sequences)
            )
        for index, tokens in enumerate(runs):
            yield from self._emit(index, prompt, forced, tokens, request, cancel)
            if cancel.is_set():
                return

    def _sampled(self, context: list[int], request: GenerationRequest, index: int) -> list[int]:
        """Tokens of one greedy or sampled candidate (EOS at the end if it ended so)."""
        s = request.settings
        rng = np.random.default_rng((request.seed + index) % 2**32)
        ids, out = list(context), []
        while len(out) < request.max_new_tokens - len(request.forced):
            kept, probs = self._sampler(self.next_logits(ids), ids, request)
            token = int(kept[0]) if s.strategy == "greedy" else int(rng.choice(kept, p=probs))
            out.append(token)
            if token == EOS:
                break
            ids.append(token)
        return out

    def _beams(self, context: list[int], request: GenerationRequest) -> list[list[int]]:
        """Beam search (``num_beams`` wide) on the model's log-probabilities; best first."""
        s = request.settings
        budget = request.max_new_tokens - len(request.forced)
        beams, done = [(0.0, [])], []
        while beams and budget > 0:
            grown = []
            for total, out in beams:
                lp = log_softmax(self.next_logits(context + out))
                for t in np.argsort(-lp, kind="stable")[: s.num_beams]:
                    grown.append((total + float(lp[t]), out + [int(t)]))
            grown.sort(key=lambda b: -b[0] / len(b[1]))
            beams = []
            for total, out in grown[: s.num_beams]:
                (done if out[-1] == EOS or len(out) >= budget else beams).append((total, out))
            if len(done) >= s.num_beams:
                break
        done = sorted(done + beams, key=lambda b: -b[0] / max(1, len(b[1])))
        rows = [out for _, out in done[: s.num_return_sequences]]
        return rows + [rows[-1]] * (s.num_return_sequences - len(rows))

    def _sampler(self, row: np.ndarray, seen: list[int], request: GenerationRequest):
        s = request.settings
        strategy = "greedy" if s.strategy == "beam" else s.strategy
        return apply_sampler(
            row,
            strategy,
            s.temperature,
            s.top_k,
            s.top_p,
            s.repetition_penalty,
            seen,
            self.sampler_order,
            self.penalty_last_n,
        )

    def _emit(self, index, prompt, forced, tokens, request, cancel) -> Iterator[Delta]:
        """Deltas of one candidate: forced tokens, then its own, stopping as the engine asks."""
        ids, written, count = list(prompt), "", 0
        for n, token in enumerate([*forced, *tokens]):
            if cancel.is_set():
                yield Delta(index, "", finish_reason="cancelled")
                return
            if token == EOS:
                yield Delta(index, "", finish_reason="stop")
                return
            if self.token_delay:
                time.sleep(self.token_delay)
            piece = VOCAB[token]
            info = None
            if request.top_logprobs or n < len(forced):
                row = self.next_logits(ids)
                sampler = (
                    None
                    if request.settings.strategy == "beam"
                    else self._sampler(row, ids, request)
                )
                k = max(request.top_logprobs, 1)
                info = token_info(row, token, k, self.piece, piece, sampler)
            ids.append(token)
            written += piece
            count += 1
            yield Delta(index, piece, tokens=1, token=info)
            if any(stop in written for stop in request.stop):
                yield Delta(index, "", finish_reason="stop")
                return
        reason = "length" if count >= request.max_new_tokens else "stop"
        yield Delta(index, "", finish_reason=reason)
