"""GPT Chat Studio: ``python main.py`` serves a chat UI for a local language model.

Wires things together: reads the config, loads the model, builds the app
(``server.launch``), serves it. Errors a user can fix are printed as one line,
without a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

# Offline by default: no telemetry or analytics calls leave this machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from chat.errors import ChatStudioError  # noqa: E402
from studio.config import ConfigError, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns the process exit code."""
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from server import logs

    logs.install()  # Gradio's own refusals of malformed requests: one line each
    log = logging.getLogger("chat_studio")  # one line per refused request, no tracebacks
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)
    log.propagate = False
    from chat.models import load_backend, remote_model, resolve_model, with_adapter
    from server.launch import build, serve
    from studio.datadir import InstanceLock

    try:
        InstanceLock(config.data_dir).acquire().release()  # fail fast, before loading a model
        if config.openai_base_url:
            spec = remote_model(config.openai_base_url, config.openai_model)
        else:
            runs_on = config.backend
            if config.adapter and runs_on == "auto":
                runs_on = "transformers"  # adapters run on transformers, a .gguf dequantized
            spec = resolve_model(config.model, runs_on)
            if config.adapter:
                spec = with_adapter(spec, config.adapter)
        print(f"Loading {spec.source} with {spec.backend} ...", flush=True)
        backend = load_backend(
            spec,
            config.device,
            config.n_ctx,
            config.n_gpu_layers,
            config.n_threads,
            config.runtime,
            os.environ.get("CHAT_STUDIO_OPENAI_API_KEY"),
            config.slots(),
        )
        if backend.capabilities.startup_error:
            print(f"warning: {backend.capabilities.startup_error}", flush=True)
        info = backend.info
        print(
            f"Model: {info.model} | backend: {info.backend} | device: {info.device} | "
            f"context: {info.n_ctx} tokens",
            flush=True,
        )
        studio = build(config, backend)
        serve(studio)
    except ChatStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    demo = studio.demo
    if config.share and not demo.share_url:
        print(
            "The share link could not be opened (no internet?). "
            f"Still serving locally at {demo.local_url}",
            flush=True,
        )
    if config.docs:
        threading.Thread(
            target=ingest_docs, args=(studio.retrieval, config.docs), daemon=True, name="docs"
        ).start()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        studio.close()
    return 0


def ingest_docs(documents, folder) -> None:
    """Ingest ``--docs DIR`` into the shared knowledge base, printing a line per file."""
    print(f"Ingesting {folder} into the shared knowledge base ...", flush=True)
    try:
        summaries = documents.ingest_folder(folder)
    except ChatStudioError as exc:
        print(f"error: --docs {folder}: {exc}", file=sys.stderr, flush=True)
        return
    for s in summaries:
        detail = s.error or f"{s.chunks_added} chunks added, {s.chunks_skipped} already there"
        print(f"  {s.file}: {s.status} ({detail})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
