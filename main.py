"""GPT Chat Studio: ``python main.py`` serves a chat UI for a local language model.

Wires things together: reads the config, loads the model, builds the UI,
launches. Errors a user can fix are printed without a traceback.
"""

from __future__ import annotations

import os
import sys
import threading

# Offline by default: no telemetry or analytics calls leave this machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from chat.config import ConfigError, load_config  # noqa: E402
from chat.errors import ChatStudioError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the app; returns the process exit code."""
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from chat.engine import ChatEngine
    from chat.models import load_backend, resolve_model
    from chat.service import ChatService

    try:
        spec = resolve_model(config.model, config.backend)
        print(f"Loading {spec.source} with {spec.backend} ...", flush=True)
        backend = load_backend(spec, config.device, config.n_ctx, config.n_gpu_layers)
    except ChatStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = backend.info
    print(
        f"Model: {info.model} | backend: {info.backend} | device: {info.device} | "
        f"context: {info.n_ctx} tokens",
        flush=True,
    )
    config.data_dir.mkdir(parents=True, exist_ok=True)

    from personas import PersonaStore
    from retrieval.service import RetrievalService
    from ui.app import ChatUI

    personas = PersonaStore(config.data_dir / "personas")
    documents = RetrievalService(
        config.data_dir,
        config.embedding_model,
        config.chroma_host,
        config.chroma_port,
        config.max_upload_mb,
    )
    service = ChatService(ChatEngine(backend), personas, documents)
    demo = ChatUI(service, queue_size=config.queue_size).create_app()
    host, port = config.bind()
    demo.launch(
        server_name=host,
        server_port=port,
        share=config.share,
        auth=config.auth_pair(),
        prevent_thread_lock=True,
        show_error=True,
        # Gradio refuses far larger uploads outright (disk safety); below that, the
        # ingest reports an oversized file in its summary while the others go in.
        max_file_size=int(max(config.max_upload_mb, 10) * 4 * 2**20),
    )
    if config.share and not demo.share_url:
        print(
            "The share link could not be opened (no internet?). "
            f"Still serving locally at {demo.local_url}",
            flush=True,
        )
    if config.docs:
        threading.Thread(
            target=ingest_docs, args=(documents, config.docs), daemon=True, name="docs"
        ).start()
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
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
