"""Check a GPU machine: offload, speed on both backends, and chat with documents in one app.

    python bench/gpu_check.py [--max-new-tokens 128]

Prints one line per check, each with its figure, and a summary. Needs a CUDA
build of llama-cpp-python (``CMAKE_ARGS="-DGGML_CUDA=on" pip install
--force-reinstall --no-cache-dir llama-cpp-python==0.3.36``) and of torch.
What it checks:

1. llama.cpp offloads the bundled model to the GPU, in its own process (the app
   keeps torch out of it), and how fast it generates;
2. transformers runs the same model on CUDA, raw and through the app's engine;
3. one running app (``python main.py``) with llama.cpp on the GPU serves a chat
   *and* document retrieval (the embedder loads torch in the app's process).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, figure: str) -> None:
    """Record and print one check."""
    RESULTS.append((name, ok, figure))
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {figure}", flush=True)


def llama_on_gpu(max_new: int) -> None:
    from bench_chat import engine_once

    from chat.engine import ChatEngine
    from chat.models import llama_gpu_offload, load_backend, resolve_model

    check("llama-cpp-python has GPU offload", llama_gpu_offload(), str(llama_gpu_offload()))
    backend = load_backend(resolve_model(None), device="cuda", runtime="auto", n_ctx=4096)
    check("llama.cpp runs in its own process on the GPU", "own process" in backend.info.device
          and "cuda" in backend.info.device, backend.info.device)  # fmt: skip
    engine = ChatEngine(backend)
    engine_once(engine, 8)
    tps, ttft = engine_once(engine, max_new)
    check("llama.cpp generation through the app's engine", tps > 0, f"{tps:.1f} tokens/s, "
          f"first token {ttft * 1000:.0f} ms")  # fmt: skip
    backend.close()


def transformers_on_gpu(max_new: int) -> None:
    import torch
    from bench_chat import transformers_pair

    check("torch sees a CUDA GPU", torch.cuda.is_available(), torch.version.cuda or "no CUDA")
    t0 = time.perf_counter()
    raw, app = transformers_pair(max_new, 3)
    ratio = app["tps"] / raw["tps"]
    check(
        "transformers on CUDA, app / plain generate",
        ratio >= 0.9,
        f"{app['tps']:.1f} / {raw['tps']:.1f} tokens/s = {ratio:.2f} (target >= 0.90); "
        f"load and runs took {time.perf_counter() - t0:.0f} s",
    )


def one_app_chat_and_documents() -> None:
    from gradio_client import Client, handle_file

    from tests.conftest import free_port

    port = free_port()
    data = Path(tempfile.mkdtemp()) / "data"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port), "--data-dir", str(data)],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        client = None
        for _ in range(300):
            try:
                client = Client(url, verbose=False)
                break
            except Exception:
                time.sleep(0.5)
        model = client.predict(api_name="/model")
        check("the app runs llama.cpp on the GPU", "cuda" in model["device"], model["device"])
        doc = data.parent / "harbour.md"
        doc.write_text("# Harbour\n\nThe ferry to Brindle Isle leaves at half past nine.")
        added = client.predict(files=[handle_file(str(doc))], api_name="/ingest")
        check("document ingest (torch embedder) in the same app", added[0]["status"] == "added",
              added[0]["status"])  # fmt: skip
        out = client.predict(
            message="When does the ferry to Brindle Isle leave?",
            use_rag=True,
            settings={"strategy": "greedy", "max_new_tokens": 32},
            api_name="/chat",
        )
        check("chat with retrieval in the same app", bool(out["sources"]) and bool(out["reply"]),
              f"{out['stats']['tokens_per_s']:.1f} tokens/s; {out['reply'][:60]!r}")  # fmt: skip
        check("the app is still up afterwards", proc.poll() is None, f"exit code {proc.poll()}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> int:
    """Run every check; exit code 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    for step in (lambda: llama_on_gpu(args.max_new_tokens),
                 lambda: transformers_on_gpu(args.max_new_tokens),
                 one_app_chat_and_documents):  # fmt: skip
        try:
            step()
        except Exception as exc:  # one failed check must not hide the others
            check("(a check could not run)", False, f"{type(exc).__name__}: {exc}")
    failed = [r for r in RESULTS if not r[1]]
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
