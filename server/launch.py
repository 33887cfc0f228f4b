"""Assembling the app around a loaded model, and serving it behind the guard.

``build`` makes every service from the config (taking the data folder's lock
first); ``serve`` launches Gradio with the guard middleware, logins, upload
limits and the session sweeper. ``main.py`` and the tests use both, so the
tests drive the app exactly as users get it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import partial

from chat.errors import ChatStudioError
from server import gradio_internals
from server.uploads import track_temp_files, use_upload_dir
from server.web import Guard
from studio.access import Access
from studio.auth import LoginThrottle
from studio.config import AppConfig
from studio.datadir import InstanceLock, load_browser_key, load_secret
from studio.limits import MB
from studio.uploads import start_upload_sweeper


class PortInUse(ChatStudioError):
    """The port is taken; the message says what to do."""


@dataclass
class Studio:
    """Everything one running app is made of."""

    config: AppConfig
    engine: object
    access: Access
    guard: Guard
    service: object
    retrieval: object
    ui: object
    demo: object
    lock: InstanceLock
    stop: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Stop serving and let go of the data folder."""
        self.stop.set()
        if getattr(self.ui, "training", None) is not None:
            self.ui.training.close()
        self.demo.close()
        self.lock.release()


def build(config: AppConfig, backend) -> Studio:
    """The services and the page for ``backend``; raises ``DataDirBusy`` if the folder is in use."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    lock = InstanceLock(config.data_dir).acquire()
    try:
        return _build(config, backend, lock)
    except BaseException:
        lock.release()
        raise


ANALYTICS_EVENTS = 256


def _build(config: AppConfig, backend, lock: InstanceLock) -> Studio:
    upload_dir = use_upload_dir(config.data_dir)  # before Gradio is imported
    # Gradio keeps a record of every event for its monitoring page, 10,000 by default
    # (about 10 MB that a soak of REST calls sees as growth); a few hundred are plenty.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(ANALYTICS_EVENTS))
    gradio_internals.check_version()  # a clear start-up error, before anything is patched
    from chat.engine import ChatEngine
    from personas import PersonaStore
    from retrieval.service import RetrievalService
    from server import fast_sessions
    from studio.documents import DocumentAccess
    from studio.service import ChatService
    from ui.app import ChatUI

    fast_sessions.install()  # a REST call need not render the whole page's config first
    track_temp_files()  # so the guard can delete what an aborted upload wrote
    limits = config.limits()
    logins = config.credentials()
    browser_key = load_browser_key(config.data_dir)  # first: it may retire an old secret
    secret = load_secret(config.data_dir)
    access = Access(
        secret,
        logins=bool(logins),
        admins=config.admin_names(),
        private=config.is_private(),
        ttl_s=limits.session_ttl_minutes * 60,
    )
    guard = Guard(
        logins=bool(logins),
        throttle=LoginThrottle(limits.login_attempts),
        upload_dir=upload_dir,
        max_request_bytes=int(limits.max_request_upload_mb * MB),
        max_files=limits.max_files_per_request,
        max_storage_bytes=int(limits.max_upload_storage_mb * MB),
        max_body_bytes=int(limits.max_request_body_mb * MB),
    )
    access.connected = guard.connected
    guard.may_use = access.may_use
    retrieval = RetrievalService(
        config.data_dir,
        config.embedding_model,
        config.chroma_host,
        config.chroma_port,
        limits.max_upload_mb,
        limits.min_free_mb,
    )
    documents = DocumentAccess(retrieval, access, limits)
    engine = ChatEngine(backend, concurrency=config.concurrency or default_concurrency(backend))
    service = ChatService(
        engine,
        PersonaStore(config.data_dir / "personas"),
        documents,
        limits,
        cascade=_cascade(config),
    )
    from studio.model_switch import ModelSwitcher
    from studio.training import for_config

    ui = ChatUI(
        service,
        access,
        guard,
        queue_size=config.queue_size,
        browser_secret=browser_key,
        switcher=ModelSwitcher(engine, config, access),
        explain_cache=config.data_dir / "explain",
        training=for_config(config, access, engine.foreground),
    )
    demo = ui.create_app()
    gradio_internals.check(demo)  # every internal the server relies on is there
    gradio_internals.calm_queue(demo)
    access.on_gone(partial(gradio_internals.forget_session, demo))  # Gradio's session state too
    guard.end_session = access.close
    return Studio(config, engine, access, guard, service, retrieval, ui, demo, lock)


def default_concurrency(backend) -> int:
    """Generations at once: a remote engine batches them, llama.cpp decodes its slots together."""
    caps = backend.capabilities
    return 8 if caps.remote else max(1, caps.parallel)


def _cascade(config: AppConfig):
    """The cascade's remote model, when ``--cascade-base-url`` names one."""
    if not config.cascade_base_url:
        return None
    import os

    from chat.engine import ChatEngine
    from chat.models import ModelSpec, load_backend
    from studio.cascade import Cascade

    key = os.environ.get("CHAT_STUDIO_CASCADE_API_KEY") or os.environ.get(
        "CHAT_STUDIO_OPENAI_API_KEY"
    )
    spec = ModelSpec("openai", config.cascade_base_url, model=config.cascade_model)
    remote = load_backend(spec, api_key=key)
    if remote.capabilities.startup_error:
        print(f"warning: cascade: {remote.capabilities.startup_error}", flush=True)
    return Cascade(
        ChatEngine(remote, concurrency=default_concurrency(remote)), config.cascade_threshold
    )


def serve(studio: Studio, quiet: bool = False) -> None:
    """Launch on the configured host and port; raises ``PortInUse`` with the fix."""
    from starlette.middleware import Middleware

    from server.web import GuardMiddleware

    config = studio.config
    limits = config.limits()
    host, port = config.bind()
    logins = config.credentials()
    per_file = min(max(limits.max_upload_mb, 10) * 4, limits.max_request_upload_mb)
    # Uvicorn (which Gradio starts) reads this when it starts; its own default trusts
    # X-Forwarded-For from 127.0.0.1, which would let any local client pick its address.
    os.environ["FORWARDED_ALLOW_IPS"] = config.trusted_proxies()
    try:
        studio.demo.launch(
            server_name=host,
            server_port=port,
            share=config.share,
            auth=logins or None,
            prevent_thread_lock=True,
            # A shared app shows visitors our own one-sentence errors (gr.Error) only; any
            # other exception (Gradio's own, on malformed input) reads "Error", never Python.
            show_error=config.is_private(),
            quiet=quiet,
            css=getattr(studio.ui, "css", None),
            # Per file, Gradio refuses far larger uploads outright (disk safety); below
            # that, the ingest summary reports an oversized file while the others go in.
            max_file_size=int(per_file * MB),
            app_kwargs={"middleware": [Middleware(GuardMiddleware, guard=studio.guard)]},
        )
    except OSError as exc:
        if "port" not in str(exc).lower():
            raise
        raise PortInUse(
            f"Port {port} on {host} is already in use. Pass --port with another number "
            "(or stop the program using it)."
        ) from None
    studio.access.start_sweeper(studio.stop)
    if studio.guard.upload_dir is not None:
        start_upload_sweeper(studio.guard.upload_dir, limits.upload_ttl_minutes * 60, studio.stop)
    studio.guard.start_sweeper(studio.stop)
