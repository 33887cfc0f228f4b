"""Application settings: one pydantic model feeding the CLI and environment variables.

Every field becomes ``--flag-name`` and is also read from ``CHAT_STUDIO_FLAG_NAME``
(handy on Hugging Face Spaces, where there is no command line).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "CHAT_STUDIO_"


class AppConfig(BaseModel):
    """How ``python main.py`` runs."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(
        None, description="Address to bind (default 127.0.0.1; 0.0.0.0 on a Hugging Face Space)."
    )
    port: int | None = Field(None, ge=1, le=65535, description="Port (default 7860 or $PORT).")
    share: bool = Field(False, description="Open a public Gradio share link (needs --auth).")
    share_without_auth: bool = Field(
        False, description="Allow --share without --auth: anyone with the link can use the app."
    )
    auth: str | None = Field(None, description="USER:PASS required to open the app.")
    model: str | None = Field(
        None,
        description="A .gguf file, a local Hugging Face model folder, or a hub id such as gpt2 "
        "(default: the bundled SmolLM2-135M-Instruct Q4_1).",
    )
    backend: Literal["auto", "llama-cpp", "transformers"] = Field(
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
    max_upload_mb: float = Field(20, gt=0, le=1024, description="Largest document accepted.")
    queue_size: int = Field(16, ge=1, le=1000, description="Requests allowed to wait in the queue.")

    def auth_pair(self) -> tuple[str, str] | None:
        """``--auth USER:PASS`` as a tuple for Gradio."""
        if not self.auth:
            return None
        user, _, password = self.auth.partition(":")
        return user, password

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
        else:
            choices = getattr(field.annotation, "__args__", None)
            kwargs = {"choices": choices} if name in ("backend", "device") else {}
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
    if config.auth is not None and ":" not in config.auth:
        raise ConfigError("--auth must look like USER:PASS")
    if config.share and not config.auth and not config.share_without_auth:
        raise ConfigError(
            "--share makes the app reachable by anyone with the link. Add --auth USER:PASS, "
            "or pass --share-without-auth if you really want it open."
        )
    return config
