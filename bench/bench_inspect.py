"""Benchmark: what Inspect costs on the bundled model (llama.cpp). Prints figures; asserts nothing.

    python bench/bench_inspect.py [--runs 5] [--max-new-tokens 128]

- decode tokens/s of the app's engine with token probabilities off and on
  (``top_logprobs`` 10: each token's log-probability, its ten alternatives and
  the sampler's view), and their ratio (target >= 0.90);
- the time of ``/perplexity`` on a text of about 1,000 tokens, end to end
  through the app's HTTP API, and of ``/next_token``;
- the explain views on a ~200-token chat prompt: sentence-level ablation and
  KernelSHAP (llama.cpp; target <= 20 s), input x gradient (transformers;
  target <= 5 s) and integrated gradients, the logit lens, the neuron index over
  the reference corpus, and calibration (cloze) on 120 questions.
  ``--explain-only`` runs just these.
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
    from chat.engine import TurnRequest
    from chat.settings import DecodingSettings

    settings = DecodingSettings(strategy="greedy", max_new_tokens=max_new, repetition_penalty=1.0)
    speeds = []
    for _ in range(runs):
        turn = TurnRequest(PROMPT, [], SYSTEM, settings, top_logprobs=top_logprobs)
        *_, last = engine.stream_turn(turn)
        speeds.append(last.stats["tokens_per_s"])
    return statistics.median(speeds)


PASSAGES = (
    "The Lindqvist lighthouse was built in 1873 on the northern cliff. Its lamp was first lit "
    "by Ada Wren, who kept it for thirty years. The tower is painted green and white. "
    "Visitors may climb its 114 steps on Saturdays between May and September. The keeper's "
    "cottage now houses a small museum about shipwrecks on the coast. A fog bell, rung by "
    "hand, still hangs beside the door. In 1931 the lamp was converted to electricity. "
    "The lighthouse stands on a headland of grey granite, forty metres above the sea. Ships "
    "passing the northern cliff once steered by its beam and by the bell on foggy nights. "
    "A storm in 1952 broke the lantern glass, and the village paid for new panes by holding "
    "a summer fair on the cliff top, which is still held every July."
)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def explain_timings() -> None:
    """Time every explain view on the bundled model and print one line each."""
    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.backends.transformers_backend import TransformersBackend
    from chat.models import default_model_path
    from explain import attribution, calibration, neurons, segments
    from explain.logit_lens import lens

    gguf = default_model_path()
    llama = LlamaCppBackend(gguf)
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer from the reference."},
        {"role": "user", "content": f"Reference: {PASSAGES}\n\nWhen was the lighthouse built?"},
    ]
    reply = "The Lindqvist lighthouse was built in 1873."
    roles = ["system", "message"]
    parts = segments.from_messages(llama.render, messages, roles)
    n_prompt = len(llama.tokenize(llama.render(messages)))
    ids = llama.tokenize(reply, special=False)
    pieces = [llama.piece(i) for i in ids]
    target = attribution.Target(ids, pieces.index(" 1") if " 1" in pieces else len(ids) - 2)
    shown = pieces[target.index]
    print(f"explain: chat prompt of {n_prompt} tokens, target token {shown!r}")
    for level in ("parts", "sentences"):
        chosen = segments.at_level(parts, level)
        free = sum(1 for x in chosen if not x.fixed)
        out, t = _timed(lambda c=chosen: attribution.attribute_parts(llama, c, target, "ablation"))
        print(
            f"  ablation over {free} {level} (llama.cpp): {t:.2f} s ({out['model_calls']} scorings)"
        )
    chosen = segments.at_level(parts, "sentences")
    out, t = _timed(lambda: attribution.attribute_parts(llama, chosen, target, "kernel_shap", 40))
    print(f"  KernelSHAP, 40 samples over sentences (llama.cpp): {t:.2f} s")
    qs = calibration.load_questions("all")[::2][:120]
    out, t = _timed(lambda: calibration.run(llama, qs, "cloze"))
    print(f"  calibration, cloze, {len(qs)} questions (llama.cpp): {t:.1f} s, accuracy "
          f"{out['accuracy']:.0%}, ECE {out['ece']:.3f}")  # fmt: skip
    out, t = _timed(lambda: calibration.run(llama, qs, "letter"))
    print(f"  calibration, letter, {len(qs)} questions (llama.cpp): {t:.1f} s, accuracy "
          f"{out['accuracy']:.0%}, ECE {out['ece']:.3f}")  # fmt: skip

    tf = TransformersBackend(str(gguf.parent), gguf_file=gguf.name, device="cpu")
    model, torch, device = tf.internals()
    prompt_ids = tf.tokenize(tf.render(messages), special=True)
    tids = tf.tokenize(reply, special=False)
    tt = attribution.Target(tids, target.index)
    for method, steps in (("input_x_gradient", 0), ("integrated_gradients", 20)):
        out, t = _timed(lambda m=method, s=steps: attribution.attribute_tokens(
            model, torch, prompt_ids, len(prompt_ids), tt, m, s or 20, device))  # fmt: skip
        gap = (
            f", completeness gap {out['completeness_gap']:+.3f}" if out["completeness_gap"] else ""
        )
        print(f"  {method} over {len(prompt_ids)} tokens (transformers): {t:.2f} s{gap}")
    _, t = _timed(lambda: lens(model, torch, tf.piece, prompt_ids[-64:], device))
    print(f"  logit lens, 64 positions x 30 layers (transformers): {t:.2f} s")
    from studio.explain import Explainer

    class _Service:  # what Explainer.corpus reads
        from personas import PersonaStore

        personas = PersonaStore()

    texts = Explainer(_Service()).corpus()
    tok = lambda text: tf.tokenize(text, special=False)  # noqa: E731
    idx, t = _timed(lambda: neurons.build_index(model, torch, tok, texts, device, "bench"))
    n_tokens = sum(len(c) for c in idx.chunks)
    print(f"  neuron index over the reference corpus ({n_tokens} tokens): {t:.1f} s "
          f"({n_tokens / t:.0f} tokens/s)")  # fmt: skip


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--explain-only", action="store_true")
    args = parser.parse_args()
    if args.explain_only:
        explain_timings()
        return

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
    explain_timings()


if __name__ == "__main__":
    main()
