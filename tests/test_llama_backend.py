"""The bundled GGUF on llama.cpp: real generation, exact where the model is deterministic."""

import threading
import time

from chat.engine import ChatEngine, TurnRequest
from chat.settings import DecodingSettings
from tests.helpers.wait import stays

SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]
GREEDY_FRANCE = "The capital of France is Paris."


def last(iterable):
    results = list(iterable)
    return results[-1], results


def test_model_info_and_template(gguf_backend):
    info = gguf_backend.info
    assert (info.backend, info.device, info.n_ctx, info.chat_template) == (
        "llama-cpp",
        "cpu",
        2048,
        True,
    )
    prompt = gguf_backend.render(SYSTEM + [{"role": "user", "content": "Hi"}])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert gguf_backend.stop_strings() == []
    assert gguf_backend.count_tokens(prompt) == len(
        gguf_backend.llm.tokenize(prompt.encode(), add_bos=False, special=True)
    )


def test_greedy_answer_is_exact(gguf_backend):
    engine = ChatEngine(gguf_backend)
    result, snapshots = last(
        engine.stream_turn(
            TurnRequest(
                "What is the capital of France?",
                [],
                SYSTEM,
                DecodingSettings(strategy="greedy", max_new_tokens=24),
            )
        )
    )
    # it streamed: the first token came before the end (the tokens between come in bursts,
    # ten a second, so a short reply may arrive in two)
    assert result.done and len(snapshots) >= 2 and not snapshots[0].done
    assert len(snapshots[0].reply) < len(result.reply)
    assert result.reply == GREEDY_FRANCE
    assert result.stats["finish_reason"] == "stop"


def test_stop_string_cuts_the_reply(gguf_backend):
    engine = ChatEngine(gguf_backend)
    result, _ = last(
        engine.stream_turn(
            TurnRequest(
                "Count from 1 to 10, separated by commas.",
                [],
                SYSTEM,
                DecodingSettings(strategy="greedy", max_new_tokens=60, stop=["5"]),
            )
        )
    )
    assert "5" not in result.reply and "4" in result.reply
    assert result.stats["finish_reason"] == "stop"


def test_cancel_halts_the_backend_quickly(gguf_backend):
    engine = ChatEngine(gguf_backend)
    cancel = threading.Event()
    settings = DecodingSettings(strategy="sample", seed=1, max_new_tokens=1500)
    t_cancel = None
    for result in engine.stream_turn(
        TurnRequest("Write a very long story about a dragon.", [], SYSTEM, settings), cancel
    ):
        if not result.done and result.stats["completion_tokens"] >= 5 and t_cancel is None:
            t_cancel = time.perf_counter()
            cancel.set()
    assert time.perf_counter() - t_cancel < 1.0
    assert result.stats["finish_reason"] == "cancelled"
    assert result.stats["completion_tokens"] < 100
    assert engine.acquire()  # the model is free for the next turn
    engine.release()


def test_candidates_use_consecutive_seeds(gguf_backend):
    engine = ChatEngine(gguf_backend)
    s = DecodingSettings(strategy="sample", seed=42, num_return_sequences=2, max_new_tokens=20)
    both, _ = last(engine.stream_turn(TurnRequest("Say something nice.", [], SYSTEM, s)))
    one, _ = last(
        engine.stream_turn(
            TurnRequest(
                "Say something nice.",
                [],
                SYSTEM,
                s.model_copy(update={"num_return_sequences": 1, "seed": 43}),
            )
        )
    )
    assert len(both.candidates) == 2 and both.candidates[1] == one.reply


def test_chinese_text_streams_whole_characters(gguf_backend):
    engine = ChatEngine(gguf_backend)
    result, snapshots = last(
        engine.stream_turn(
            TurnRequest(
                "请用中文说你好",
                [],
                [{"role": "system", "content": "你是一只可爱的猫娘"}],
                DecodingSettings(strategy="greedy", max_new_tokens=30),
            )
        )
    )
    assert all("\ufffd" not in s.reply for s in snapshots)
    assert result.stats["completion_tokens"] > 0


def test_a_request_waiting_for_the_model_gives_up_on_cancel(gguf_backend):
    """The prompt is built outside the generation slot; waiting for one ends on cancel."""
    from chat.errors import Cancelled

    engine = ChatEngine(gguf_backend)
    assert engine.acquire()  # someone else is generating
    cancel = threading.Event()
    outcome = []

    def turn():
        try:
            for result in engine.stream_turn(
                TurnRequest("Hi", [], SYSTEM, DecodingSettings()), cancel
            ):
                outcome.append(result)
        except Cancelled:
            outcome.append("cancelled")

    worker = threading.Thread(target=turn)
    worker.start()
    # still waiting for the slot, and it stays so until the cancel
    assert stays(lambda: (worker.is_alive(), len(outcome)), 0.5) == (True, 0)
    cancel.set()
    worker.join(timeout=2)
    engine.release()
    assert outcome == ["cancelled"]


def test_a_generation_stops_at_the_time_limit(gguf_backend):
    engine = ChatEngine(gguf_backend)
    settings = DecodingSettings(strategy="sample", seed=2, max_new_tokens=2000)
    t0 = time.perf_counter()
    *_, result = engine.stream_turn(
        TurnRequest("Tell a long story.", [], SYSTEM, settings, max_seconds=1.0)
    )
    assert time.perf_counter() - t0 < 3
    assert result.stats["finish_reason"] == "time_limit"
    assert any("--max-request-seconds" in n for n in result.notices)
