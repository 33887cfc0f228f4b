"""Application settings: one pydantic model feeding the CLI and environment variables.

Every field becomes ``--flag-name`` and is also read from ``CHAT_STUDIO_FLAG_NAME``
(handy on Hugging Face Spaces, where there is no command line).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError

from studio.auth import CredentialsError, load_credentials
from studio.limits import Limits

ENV_PREFIX = "CHAT_STUDIO_"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# A Space's proxy reaches the app from inside the platform; the client is then the
# last address in X-Forwarded-For outside these networks.
SPACE_PROXY_NETWORKS = "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,::1,fc00::/7"


class AppConfig(Limits):
    """How ``python main.py`` runs (the limits are ``studio.limits.Limits``' fields)."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(
        None, description="Address to bind (default 127.0.0.1; 0.0.0.0 on a Hugging Face Space)."
    )
    port: int | None = Field(None, ge=1, le=65535, description="Port (default 7860 or $PORT).")
    share: bool = Field(False, description="Open a public Gradio share link (needs --auth).")
    share_without_auth: bool = Field(
        False, description="Allow --share without --auth: anyone with the link can use the app."
    )
    auth: str | None = Field(
        None, description="USER:PASS required to open the app (password of 8+ characters)."
    )
    auth_file: Path | None = Field(
        None,
        description="A file of USER:PASS lines, one login each; keeps passwords out of the "
        "process list.",
    )
    admins: str | None = Field(
        None,
        description="Comma-separated logged-in users who may change the shared knowledge base "
        "and shared personas. Unset on a private app (loopback, no share link, not a Space): "
        "you, at this machine, are the admin.",
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="Comma-separated proxy addresses or networks (CIDR) whose X-Forwarded-For "
        "names the client, or * for any (uvicorn's option). Default: none, so a client cannot "
        "pick its own address; on a Hugging Face Space, the private networks its proxy is in.",
    )
    model: str | None = Field(
        None,
        description="A .gguf file, a local Hugging Face model folder, or a hub id such as gpt2 "
        "(default: the bundled SmolLM2-135M-Instruct Q4_1).",
    )
    adapter: str | None = Field(
        None,
        description="A trained adapter folder (from the Train tab) to chat with on top of "
        "--model; it runs on transformers.",
    )
    # "standin": the deterministic stand-in model for tests (chat.backends.standin), not in --help
    backend: Literal["auto", "llama-cpp", "transformers", "standin"] = Field(
        "auto", description="Which runtime loads the model (auto: .gguf -> llama-cpp)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses the GPU when there is one."
    )
    n_gpu_layers: int | None = Field(
        None, ge=-1, description="llama.cpp layers to offload (-1 = all; default: all if a GPU)."
    )
    n_ctx: int | None = Field(
        None, ge=128, le=131072, description="Context window in tokens (llama.cpp default 4096)."
    )
    n_threads: int | None = Field(
        None,
        ge=1,
        le=512,
        description="llama.cpp generation threads, fixed (default: chosen while running from "
        "measured step times, up to one per physical core, fewer when other work takes cores).",
    )
    parallel: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Conversations a llama.cpp model decodes together, each with its own "
        "context window of --n-ctx tokens, in one lane per core "
        "(default 4 on a shared app, 1 on a private one).",
    )
    runtime: Literal["auto", "in-process", "subprocess"] = Field(
        "auto",
        description="Where a llama.cpp model runs: in this process, or in a child process "
        "(auto: a child when llama.cpp has GPU offload, so it never shares a process with torch).",
    )
    openai_base_url: str | None = Field(
        None,
        description="Use an OpenAI-compatible engine (vLLM, llama-server, Ollama, TGI) at this "
        "URL, e.g. http://127.0.0.1:8000/v1; its API key comes from CHAT_STUDIO_OPENAI_API_KEY.",
    )
    openai_model: str | None = Field(
        None, description="The engine's model to use (default: the first it lists)."
    )
    models_dir: Path | None = Field(
        None, description="A folder of .gguf files for the Model tab (default: data-dir/models)."
    )
    allow_model_switch: bool = Field(
        False,
        description="Let visitors of a shared app load another model (one model serves everyone).",
    )
    cascade_base_url: str | None = Field(
        None,
        description="LLM cascade: an OpenAI-compatible engine that answers instead when the local "
        "model's reply is below the confidence threshold.",
    )
    cascade_model: str | None = Field(None, description="The cascade engine's model.")
    cascade_threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Mean token probability under which the cascade engine answers instead.",
    )
    allow_training: bool = Field(
        False,
        description="Let visitors of a shared app train adapters in the Train tab (admins "
        "always may; on a private app, you may). One job runs at a time.",
    )
    max_train_minutes: float = Field(
        30,
        gt=0,
        le=1440,
        description="Longest one training job may run; it then stops and keeps its last "
        "finished checkpoint.",
    )
    max_train_rows: int = Field(
        5000, ge=1, le=1_000_000, description="Most rows one training dataset may hold."
    )
    max_train_upload_mb: float = Field(
        20, gt=0, le=1024, description="Largest JSONL training dataset accepted."
    )
    data_dir: Path = Field(Path("data"), description="Where user data is kept.")
    docs: Path | None = Field(
        None, description="A folder ingested into the shared knowledge base at start."
    )
    embedding_model: str | None = Field(
        None,
        description="A local sentence-transformers model folder for document search "
        "(default: the bundled all-MiniLM-L6-v2).",
    )
    chroma_host: str | None = Field(
        None, description="Use a Chroma server (chroma run) instead of data-dir/chroma."
    )
    chroma_port: int | None = Field(None, ge=1, le=65535, description="The Chroma server's port.")
    queue_size: int = Field(16, ge=1, le=1000, description="Requests allowed to wait in the queue.")
    concurrency: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Generations run at once (default --parallel for a llama.cpp model, "
        "1 for transformers, 8 for a remote engine, which batches them).",
    )

    def credentials(self) -> list[tuple[str, str]]:
        """Every configured ``(user, password)``; empty when the app needs no login."""
        return load_credentials(self.auth, self.auth_file)

    def admin_names(self) -> set[str]:
        """The users named by ``--admins``."""
        return {a.strip() for a in (self.admins or "").split(",") if a.strip()}

    def is_private(self) -> bool:
        """Reachable from this machine only: loopback, no share link, not a Space."""
        host, _ = self.bind()
        return host in LOOPBACK and not self.share and not os.environ.get("SPACE_ID")

    def slots(self) -> int:
        """Conversations decoded together (``--parallel``, else by who can reach the app)."""
        return self.parallel or (1 if self.is_private() else 4)

    def trusted_proxies(self) -> str:
        """Uvicorn's ``forwarded_allow_ips``: ours, a Space's proxy networks, or none ("")."""
        if self.forwarded_allow_ips is not None:
            return self.forwarded_allow_ips
        return SPACE_PROXY_NETWORKS if os.environ.get("SPACE_ID") else ""

    def limits(self) -> Limits:
        """The per-request and per-session limits."""
        return Limits.model_validate({k: getattr(self, k) for k in Limits.model_fields})

    def bind(self) -> tuple[str, int]:
        """Host and port, following what a Hugging Face Space or Gradio env vars ask for."""
        on_space = bool(os.environ.get("SPACE_ID"))
        host = (
            self.host
            or os.environ.get("GRADIO_SERVER_NAME")
            or ("0.0.0.0" if on_space else "127.0.0.1")
        )
        port = self.port or int(
            os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860
        )
        return host, port


class ConfigError(ValueError):
    """The command line or environment asks for something impossible."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The ``main.py`` argument parser, generated from ``AppConfig``."""
    parser = argparse.ArgumentParser(
        prog="python main.py",
        description="GPT Chat Studio: chat with a local language model in your browser. "
        f"Every option can also be set as an environment variable {ENV_PREFIX}NAME.",
    )
    for name, field in AppConfig.model_fields.items():
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description} [env {env}]"
        if field.annotation is bool:
            parser.add_argument(_flag(name), action="store_true", default=None, help=help_text)
        elif name == "auth":
            parser.add_argument(_flag(name), metavar="USER:PASS", help=help_text)
        elif name == "admins":
            parser.add_argument(_flag(name), metavar="USER,USER", help=help_text)
        else:
            choices = getattr(field.annotation, "__args__", None)
            kwargs = {"choices": choices} if name in ("backend", "device", "runtime") else {}
            parser.add_argument(_flag(name), metavar=name.upper(), help=help_text, **kwargs)
    return parser


def load_config(argv: list[str] | None = None, environ: dict | None = None) -> AppConfig:
    """Command line over environment over defaults; raises ``ConfigError`` with the fix."""
    environ = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values = {}
    for name in AppConfig.model_fields:
        value = args.get(name)
        if value is None:
            value = environ.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            values[name] = value
    try:
        config = AppConfig.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{_flag(str(err['loc'][0]))}: {err['msg']}") from None
    try:
        logins = config.credentials()
    except CredentialsError as exc:
        raise ConfigError(str(exc)) from None
    if config.share and not logins and not config.share_without_auth:
        raise ConfigError(
            "--share makes the app reachable by anyone with the link. Add --auth USER:PASS "
            "(or --auth-file FILE), or pass --share-without-auth if you really want it open."
        )
    bad = _bad_proxy_entry(config.forwarded_allow_ips)
    if bad is not None:
        raise ConfigError(
            f"--forwarded-allow-ips: {bad!r} is not an IP address, a network such as "
            "10.0.0.0/8, or *"
        )
    unknown = config.admin_names() - {u for u, _ in logins}
    if unknown:
        raise ConfigError(
            f"--admins names {', '.join(sorted(unknown))}, who cannot log in: add them to "
            "--auth or --auth-file"
        )
    return config


def _bad_proxy_entry(value: str | None) -> str | None:
    """The first entry of ``--forwarded-allow-ips`` that is not an address, network or ``*``."""
    for item in (value or "").split(","):
        item = item.strip()
        if item in ("*", ""):
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return item
    return None
