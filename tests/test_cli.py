"""The command line: options, environment variables, and the errors users meet first."""

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio.config import ConfigError, load_config
from tests.conftest import free_port, spawn_main

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--host",
    "--port",
    "--share",
    "--auth",
    "--model",
    "--backend",
    "--device",
    "--n-gpu-layers",
    "--n-ctx",
    "--data-dir",
    "--share-without-auth",
]


def run_main(*args, env=None, timeout=120):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_every_option():
    out = run_main("--help")
    assert out.returncode == 0
    for flag in FLAGS:
        assert flag in out.stdout
    assert "CHAT_STUDIO_MODEL" in out.stdout


def test_environment_variables_are_read_and_flags_win():
    cfg = load_config([], {"CHAT_STUDIO_MODEL": "gpt2", "CHAT_STUDIO_PORT": "8000"})
    assert cfg.model == "gpt2" and cfg.port == 8000
    assert load_config(["--port", "9000"], {"CHAT_STUDIO_PORT": "8000"}).port == 9000


def test_space_binds_what_the_space_gives(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "me/chat")
    monkeypatch.setenv("PORT", "7861")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert load_config([], {}).bind() == ("0.0.0.0", 7861)


def test_share_needs_auth_or_explicit_consent():
    with pytest.raises(ConfigError, match="--share-without-auth"):
        load_config(["--share"], {})
    cfg = load_config(["--share", "--auth", "ada:long-enough"], {})
    assert cfg.credentials() == [("ada", "long-enough")]
    assert load_config(["--share", "--share-without-auth"], {}).share
    with pytest.raises(ConfigError, match="USER:PASS"):
        load_config(["--auth", "nocolon"], {})


def test_share_without_auth_is_refused_at_the_command_line():
    out = run_main("--share")
    assert out.returncode == 2 and "--share-without-auth" in out.stderr


def test_missing_model_file_is_named():
    out = run_main("--model", "no/such/model.gguf")
    assert out.returncode == 1
    assert "no/such/model.gguf" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_model_file_is_named(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    out = run_main("--model", str(bad))
    assert out.returncode == 1
    assert "broken.gguf" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow  # the child imports transformers to look in the hub cache
def test_uncached_hub_id_offline_gets_one_clear_message():
    out = run_main("--model", "gpt2")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "--model" in out.stderr and "cache" in out.stderr


def test_beam_backend_mismatch_is_explained():
    out = run_main("--backend", "llama-cpp", "--model", "gpt2")
    assert out.returncode == 1 and "--backend transformers" in out.stderr


@pytest.mark.model
@pytest.mark.slow
def test_main_serves_the_page_and_prints_the_device():
    port = free_port()
    proc = spawn_main("--port", str(port))
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if f"127.0.0.1:{port}" in line:
                break
        text = "".join(lines)
        assert re.search(r"device: cpu", text), text
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "GPT Chat Studio" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.model
@pytest.mark.slow
def test_share_without_network_keeps_serving_locally():
    port = free_port()
    proc = spawn_main("--port", str(port), "--share", "--share-without-auth")
    try:
        deadline = time.time() + 120
        text = ""
        while time.time() < deadline and not any(
            s in text for s in ("Still serving locally", "public URL")
        ):
            text += proc.stdout.readline()
        if "public URL" in text:
            pytest.skip("this machine has internet: the share link opened")
        assert "Still serving locally" in text
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
