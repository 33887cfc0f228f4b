"""Benchmark: what Inspect costs on the bundled model (llama.cpp). Prints figures; asserts nothing.

    python bench/bench_inspect.py [--runs 5] [--max-new-tokens 128]

- decode tokens/s of the app's engine with token probabilities off and on
  (``top_logprobs`` 10: each token's log-probability, its ten alternatives and
  the sampler's view), and their ratio (target >= 0.90);
- the time of ``/perplexity`` on a text of about 1,000 tokens, end to end
  through the app's HTTP API, and of ``/next_token``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Write a story about a cat who goes on an adventure."
SYSTEM = [{"role": "system", "content": "You are a helpful, concise assistant."}]
TEXT = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling in long strips. "
    "Every evening the keeper climbed the spiral stairs, lit the lamp and watched the ships "
    "pass far below. Some nights the fog rolled in so thick that the beam seemed to stop a few "
    "yards from the glass, and he would ring the bell by hand until morning. "
)


def decode_speed(engine, top_logprobs: int, max_new: int, runs: int) -> float:
    """Median decode tokens/s of greedy turns (tokens after the first, over their time)."""
    from chat.settings import DecodingSettings

    settings = DecodingSettings(strategy="greedy", max_new_tokens=max_new, repetition_penalty=1.0)
    speeds = []
    for _ in range(runs):
        *_, last = engine.stream_turn(PROMPT, [], SYSTEM, settings, top_logprobs=top_logprobs)
        speeds.append(last.stats["tokens_per_s"])
    return statistics.median(speeds)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    import tempfile

    from gradio_client import Client

    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.engine import ChatEngine
    from chat.models import default_model_path
    from tests.conftest import start_studio

    backend = LlamaCppBackend(default_model_path())
    engine = ChatEngine(backend)
    decode_speed(engine, 0, 8, 1)  # warm-up
    off, on = [], []
    for _ in range(args.runs):  # interleaved, so drift hits both sides alike
        off.append(decode_speed(engine, 0, args.max_new_tokens, 1))
        on.append(decode_speed(engine, 10, args.max_new_tokens, 1))
    plain, probs = statistics.median(off), statistics.median(on)

    text = TEXT
    while len(backend.tokenize(text, special=False)) < 1000:
        text += TEXT
    ids = backend.tokenize(text, special=False)[:1000]
    text = backend.llm.detokenize(ids).decode("utf-8", errors="ignore")
    studio = start_studio(backend, Path(tempfile.mkdtemp()) / "data")
    try:
        client = Client(studio.demo.local_url, verbose=False)
        times, nt = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            out = client.predict(text=text, api_name="/perplexity")
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.predict(text="The capital of France is", api_name="/next_token")
            nt.append(time.perf_counter() - t0)
    finally:
        studio.close()

    print(f"greedy, {args.max_new_tokens} new tokens, median of {args.runs} runs each")
    print(f"decode tokens/s, token probabilities off: {plain:.1f}")
    print(f"decode tokens/s, top_logprobs=10:         {probs:.1f}")
    print(f"ratio on/off: {probs / plain:.2f}  (target >= 0.90)")
    print(
        f"/perplexity on {len(out['tokens'])} tokens: {statistics.median(times):.2f} s "
        f"(perplexity {out['perplexity']:.2f}; {out['method']})"
    )
    print(f"/next_token on a short text: {statistics.median(nt) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
