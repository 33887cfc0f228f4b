"""Continuous batching on the bundled GGUF: concurrent visitors decode together, exactly as alone.

Each test compares greedy replies produced while other conversations share
the decode steps with the same replies produced alone: they must be equal,
token for token. The scheduler is held still (an exclusive job) while
requests queue up, so which requests share which steps does not depend on
timing.
"""

from __future__ import annotations

import threading

import pytest

from chat.backends.base import GenerationRequest
from chat.engine import ChatEngine, TurnRequest
from chat.settings import DecodingSettings

# The bundled GGUF on llama.cpp, four sequences at once.
pytestmark = [pytest.mark.model]

SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]
QUESTIONS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Name three colours of the rainbow.",
    "Explain what a computer is in two sentences.",
]
LONG = "Write a long story about a cat who goes on an adventure."


@pytest.fixture(scope="module", params=[2, 1], ids=["two lanes", "one lane"])
def batched(request):
    """The bundled model with 4 sequences decoded together: in two lanes of two (a CPU with
    two cores or more), or all four in one step (a GPU, or one core)."""
    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.models import default_model_path

    backend = LlamaCppBackend(default_model_path(), n_ctx=1024, parallel=4, lanes=request.param)
    assert len(backend.scheduler.lanes) == request.param
    yield backend
    backend.close()


def request(backend, question: str, max_new: int = 40, **options) -> GenerationRequest:
    settings = DecodingSettings(strategy="greedy", max_new_tokens=max_new, **options)
    prompt = backend.render(SYSTEM + [{"role": "user", "content": question}])
    return GenerationRequest(prompt, settings, seed=0, max_new_tokens=max_new)


class Reader:
    """Runs one generation in a thread and keeps what it streamed."""

    def __init__(self, backend, req: GenerationRequest, cancel=None):
        self.cancel = cancel or threading.Event()
        self.deltas = []
        self.first = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(backend, req), daemon=True)
        self.thread.start()

    def _read(self, backend, req):
        for delta in backend.generate(req, self.cancel):
            self.deltas.append(delta)
            if delta.tokens:
                self.first.set()

    def result(self) -> tuple[str, str, int]:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive()
        text = "".join(d.text for d in self.deltas)
        return text, self.deltas[-1].finish_reason, sum(d.tokens for d in self.deltas)


def alone(backend, req) -> tuple[str, str, int]:
    return Reader(backend, req).result()


def together(backend, reqs) -> list[tuple[str, str, int]]:
    """Start ``reqs`` while the scheduler is held, so they all join the same step."""
    gate, held = threading.Event(), threading.Event()
    hold = threading.Thread(
        target=backend.scheduler.exclusive, args=(lambda: (held.set(), gate.wait(60)),)
    )
    hold.start()
    held.wait(30)
    readers = [Reader(backend, r) for r in reqs]
    while backend.scheduler._joining.qsize() < len(reqs):
        threading.Event().wait(0.01)
    gate.set()
    hold.join()
    return [r.result() for r in readers]


def test_four_concurrent_greedy_replies_equal_each_alone(batched):
    assert batched.capabilities.parallel == 4  # what the app's concurrency follows
    reqs = [request(batched, q) for q in QUESTIONS]
    solo = [alone(batched, r) for r in reqs]
    steps_before = batched.scheduler.steps
    lane_steps = [lane.steps for lane in batched.scheduler.lanes]
    shared = together(batched, reqs)
    assert shared == solo
    assert all(text for text, _, _ in shared)
    # They really shared steps: no lane took more steps than the longest reply has tokens,
    # and every lane had its share.
    assert batched.scheduler.steps - steps_before <= max(n for _, _, n in shared)
    lanes = batched.scheduler.lanes
    assert all(lane.steps > before for lane, before in zip(lanes, lane_steps, strict=True))


def test_a_cancelled_sequence_frees_its_slot_while_others_continue(batched):
    long_req = request(batched, LONG, max_new=300)
    others = [request(batched, q, max_new=60) for q in QUESTIONS[:2]]
    solo_others = [alone(batched, r) for r in others]
    cancel = threading.Event()
    victim = Reader(batched, long_req, cancel)
    victim.first.wait(60)
    readers = [Reader(batched, r) for r in others]
    for r in readers:
        r.first.wait(60)
    cancel.set()
    text, finish, n = victim.result()
    assert finish == "cancelled" and n < 300
    # Its slot is free again: a newcomer starts and finishes while the others still run.
    newcomer = alone(batched, request(batched, QUESTIONS[2], max_new=8))
    assert newcomer[2] == 8
    assert [r.result() for r in readers] == solo_others
    assert batched.scheduler.free_slots() == [0, 1, 2, 3]


def test_a_new_request_joins_mid_stream(batched):
    first = request(batched, LONG, max_new=80)
    second = request(batched, QUESTIONS[0], max_new=20)
    solo = [alone(batched, first), alone(batched, second)]
    reader = Reader(batched, first)
    while sum(d.tokens for d in reader.deltas) < 10:
        threading.Event().wait(0.005)
    steps = batched.scheduler.steps
    joined = alone(batched, second)
    assert reader.thread.is_alive()  # the first was still streaming when the second finished
    assert [reader.result(), joined] == solo
    assert batched.scheduler.steps - steps < 80  # shared steps, not one after the other


def test_features_work_alongside_another_conversation(batched):
    """top_logprobs, a forced prefix and a stop string, while a long reply decodes beside."""
    engine = ChatEngine(batched, concurrency=4)
    greedy = DecodingSettings(strategy="greedy", max_new_tokens=24)

    def turn(**kwargs):
        *_, result = engine.stream_turn(TurnRequest(QUESTIONS[0], [], SYSTEM, greedy, **kwargs))
        return result

    solo = turn(top_logprobs=3)
    forced = [solo.tokens[0][0]["id"], solo.tokens[0][1]["top"][1]["id"]]
    solo_forced = turn(top_logprobs=3, forced=forced)
    cancel = threading.Event()
    beside = Reader(batched, request(batched, LONG, max_new=400), cancel)
    beside.first.wait(60)
    try:
        shared = turn(top_logprobs=3)
        shared_forced = turn(top_logprobs=3, forced=forced)
        ids = batched.tokenize("The capital of France is", special=False)
        explorer = int(batched.next_logits(ids).argmax())
        scored = batched.score(ids)
        assert beside.thread.is_alive()
    finally:
        cancel.set()
    assert beside.result()[1] == "cancelled"
    assert shared.reply == solo.reply and shared.tokens == solo.tokens
    assert shared_forced.tokens == solo_forced.tokens
    assert [t["id"] for t in shared_forced.tokens[0][:2]] == forced
    assert batched.piece(explorer) == " Paris"
    assert len(scored[0]) == len(ids) - 1


def test_two_conversations_take_a_lane_each_and_share_the_cores(batched):
    """Two lanes: one conversation each, one thread each (on two cores). One lane: both in
    it, decoded together on the tuner's threads."""
    lanes = batched.scheduler.lanes
    cancels = [threading.Event(), threading.Event()]
    readers = [Reader(batched, request(batched, LONG, max_new=300), c) for c in cancels]
    for r in readers:
        r.first.wait(60)
    # A lane's threads for decoding show from its next step: a prompt evaluated before the
    # other conversation joined ran on the cores free then (a race seen once under load).
    steps = [lane.steps for lane in lanes]
    for _ in range(3000):
        if all(lane.steps > before for lane, before in zip(lanes, steps, strict=True)):
            break
        threading.Event().wait(0.01)
    seen = set()
    try:
        for _ in range(40):  # while both decode
            busy = [len(lane.active) for lane in lanes]
            seen.add((tuple(busy), tuple(lane._threads[0] for lane in lanes)))
            threading.Event().wait(0.01)
    finally:
        for c in cancels:
            c.set()
    assert [r.result()[1] for r in readers] == ["cancelled", "cancelled"]
    expected = (1, 1) if len(lanes) == 2 else (2,)
    cores = max(1, batched.tuner.max_threads // len(lanes))
    assert all(busy == expected and max(threads) <= cores for busy, threads in seen), seen


def test_a_lone_conversation_decodes_in_one_lane_on_every_thread(batched):
    """One visitor is as fast as without lanes: one lane decodes it, on the tuner's count."""
    lanes = batched.scheduler.lanes
    steps = [lane.steps for lane in lanes]
    alone(batched, request(batched, QUESTIONS[1], max_new=30))
    assert sum(lane.steps > before for lane, before in zip(lanes, steps, strict=True)) == 1
    assert batched.scheduler._threads(lanes[0], 1)[0] == batched.tuner.threads(1)
    # Only the first lane ever runs several threads (more OpenMP threads than cores made
    # every lane's barriers sleep instead of spin).
    assert all(lane._threads == (1, 1) for lane in lanes[1:])


def test_exclusive_jobs_run_on_the_first_lane_with_the_others_held(batched):
    """The explorer and perplexity run on lane 0's thread: a job on the caller's thread
    would give OpenMP one more team of threads, and more than the cores slow every step."""
    lanes = batched.scheduler.lanes
    seen = batched.scheduler.exclusive(
        lambda: (threading.current_thread().name, [lane.steps for lane in lanes])
    )
    assert seen[0] == "llama-lane-0"
    ids = batched.tokenize("The capital of France is", special=False)
    assert batched.piece(int(batched.next_logits(ids).argmax())) == " Paris"


def test_the_end_of_a_reply_is_passed_on_at_once(batched, monkeypatch):
    """The caller's thread takes tokens in batches (at most every RELAY_EVERY_S), but the
    end of a reply wakes it: a reply never waits out the batching interval to finish."""
    import time

    from chat.backends import llama_batch

    monkeypatch.setattr(llama_batch, "RELAY_EVERY_S", 60.0)
    start = time.monotonic()
    text, reason, tokens = alone(batched, request(batched, QUESTIONS[0], max_new=12))
    assert tokens >= 2 and reason in ("stop", "length")
    assert time.monotonic() - start < 30  # woken by the end, not after the 60 s interval


def test_tokens_are_passed_on_in_bursts_at_most_every_relay_interval(batched):
    """After the first token, a caller gets the tokens decoded since in one list, no more
    often than RELAY_EVERY_S (each burst costs the server an event and the page a redraw);
    together they are the reply ``generate`` streams token by token."""
    import time

    from chat.backends import llama_batch

    req = request(batched, LONG, max_new=64)
    stamps, bursts = [], []
    for burst in batched.bursts(req, threading.Event()):
        stamps.append(time.monotonic())
        bursts.append(burst)
    deltas = [d for burst in bursts for d in burst]
    assert len(bursts) < len(deltas) // 2  # several tokens per burst
    assert [d.tokens for d in bursts[0]] == [1]  # the first token goes alone, at once
    gaps = [b - a for a, b in zip(stamps[:-2], stamps[1:-1], strict=True)]
    assert gaps and min(gaps) >= 0.9 * llama_batch.RELAY_EVERY_S  # the last goes at once
    assert deltas == list(batched.generate(req, threading.Event()))


def test_a_waiting_sequence_takes_a_freed_slot_at_once(monkeypatch):
    """With one slot, a reply's second candidate waits for the first to finish, and then
    starts at once: the lane does not idle while a sequence waits for its slot."""
    import time

    from chat.backends import llama_lane
    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.models import default_model_path

    monkeypatch.setattr(llama_lane, "IDLE_WAIT_S", 60.0)
    backend = LlamaCppBackend(default_model_path(), n_ctx=512, parallel=1)
    try:
        start = time.monotonic()
        results = together(backend, [request(backend, q, max_new=8) for q in QUESTIONS[:2]])
        assert all(tokens >= 1 for _, _, tokens in results)
        assert time.monotonic() - start < 30  # not after the 60 s idle wait
    finally:
        backend.close()
