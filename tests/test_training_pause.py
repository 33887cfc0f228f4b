"""A chat's prompt evaluation pauses the training child (it is in the stopped state), which
runs again after the first token, after the watchdog's bound, or when the job is stopped."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest

from chat.backends.standin import StandinBackend
from chat.engine import ChatEngine, TurnRequest
from chat.foreground import Foreground
from chat.settings import DecodingSettings
from tests.helpers.tiny_models import save_tiny, tiny_tokenizer
from training.data import build_dataset
from training.jobs import JobSpec, TrainJobs
from training.settings import TrainSettings

pytestmark = pytest.mark.slow  # a real training child, for seconds

ROWS = [{"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"}
        for i in range(8)]  # fmt: skip
GREEDY = DecodingSettings(strategy="greedy", max_new_tokens=12, repetition_penalty=1.0)
WATCHDOG_S = 1.0


def child(jobs: TrainJobs, job: str) -> psutil.Process:
    return psutil.Process(jobs._jobs[job].process.pid)


def settles(check, timeout: float = 20.0) -> bool:
    """Whether ``check()`` becomes true within ``timeout`` (a signal lands asynchronously)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stopped(proc: psutil.Process) -> bool:
    return proc.status() == psutil.STATUS_STOPPED


def runs(proc: psutil.Process) -> bool:
    return proc.status() != psutil.STATUS_STOPPED


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """One job training for minutes (stopped by the last test), its jobs listening to a
    foreground."""
    tmp = tmp_path_factory.mktemp("pause")
    jobs = TrainJobs(tmp / "jobs", max_pause_s=WATCHDOG_S)
    s = TrainSettings(learning_rate=1e-2, batch_size=2, eval_share=0.25, max_steps=2000,
                      eval_every=2, threads=1)  # fmt: skip
    spec = JobSpec(model=save_tiny("llama", tmp / "base"), out_dir=tmp / "adapters",
                   data=build_dataset(ROWS, "sft", s, tiny_tokenizer()), settings=s,
                   max_seconds=600, name="sums")  # fmt: skip
    job = jobs.start(spec)
    assert settles(lambda: jobs.status(job)["step"] >= 2, 240), jobs.status(job)
    fg = Foreground()
    fg.listen(jobs.hold)
    yield jobs, job, fg
    jobs.close()


class Observed(StandinBackend):
    """The stand-in, noting the training child's state when it evaluates the prompt."""

    def __init__(self, proc: psutil.Process):
        super().__init__()
        self.proc, self.seen = proc, None

    def generate(self, request, halt):
        self.seen = settles(lambda: stopped(self.proc))
        yield from super().generate(request, halt)


def test_a_chat_pauses_training_until_its_first_token(training):
    jobs, job, fg = training
    proc = child(jobs, job)
    backend = Observed(proc)
    *_, last = ChatEngine(backend, foreground=fg).stream_turn(TurnRequest("hi", [], [], GREEDY))
    assert last.reply == "echo: hi"
    assert backend.seen is True  # stopped during the prompt
    assert settles(lambda: runs(proc))
    step = jobs.status(job)["step"]
    assert settles(lambda: jobs.status(job)["step"] > step, 120)  # and trains on


def test_two_overlapping_chats_keep_it_paused_until_both_leave(training):
    jobs, job, fg = training
    proc = child(jobs, job)
    a_in, b_left = threading.Event(), threading.Event()

    def chat_b():
        a_in.wait(10)
        with fg.prompt():
            pass
        b_left.set()

    other = threading.Thread(target=chat_b)
    other.start()
    with fg.prompt():
        assert settles(lambda: stopped(proc))
        a_in.set()
        assert b_left.wait(10)
        assert stopped(proc)  # the other chat left; this one is still evaluating
    other.join(10)
    assert settles(lambda: runs(proc))


def test_the_watchdog_resumes_a_pause_that_lasts_too_long(training):
    jobs, job, fg = training
    proc = child(jobs, job)
    with fg.prompt():
        assert settles(lambda: stopped(proc))
        assert settles(lambda: runs(proc), 20 * WATCHDOG_S)  # still in the foreground
        step = jobs.status(job)["step"]
        assert settles(lambda: jobs.status(job)["step"] > step, 120)
    assert runs(proc)


def test_stop_ends_a_paused_job_and_keeps_its_checkpoint(training):
    """Last in this file: it ends the module's job."""
    jobs, job, fg = training
    proc = child(jobs, job)
    with fg.prompt():
        assert settles(lambda: stopped(proc))
        jobs.stop(job)
        s = jobs.wait(job, timeout=120)
    assert s["state"] == "stopped", s["message"]
    assert s["adapter"]
    with fg.prompt():  # nothing left to pause
        pass


ORPHAN = """
import os, signal, sys, time
from pathlib import Path
from tests.helpers.tiny_models import save_tiny, tiny_tokenizer
from training.data import build_dataset
from training.jobs import JobSpec, TrainJobs
from training.settings import TrainSettings

if __name__ == "__main__":
    tmp = Path(sys.argv[1])
    rows = [{"prompt": f"What is {i} plus {i}?", "completion": f"{i} + {i} = {2 * i}"}
            for i in range(8)]
    s = TrainSettings(learning_rate=1e-2, batch_size=2, eval_share=0.25, max_steps=2000,
                      eval_every=2, threads=1)
    jobs = TrainJobs(tmp / "jobs", max_pause_s=3600)
    job = jobs.start(JobSpec(model=save_tiny("llama", tmp / "base"), out_dir=tmp / "adapters",
                             data=build_dataset(rows, "sft", s, tiny_tokenizer()), settings=s,
                             max_seconds=600))
    while jobs.status(job)["step"] < 2:
        time.sleep(0.1)
    jobs.hold(True)  # a chat's prompt, and the app dies in the middle of it
    print("child", jobs._jobs[job].process.pid, jobs.root / job, flush=True)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_job_paused_when_the_app_dies_runs_on_and_stops(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "app.py"
    script.write_text(ORPHAN)
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out.txt"
    with open(out, "w") as f:  # a file, not a pipe: the orphan keeps the app's stdout open
        env = {**os.environ, "PYTHONPATH": str(root)}
        app = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=root, env=env,
                             stdout=f, stderr=f, timeout=300)  # fmt: skip
    assert app.returncode == -9, out.read_text()
    (line,) = [x for x in out.read_text().splitlines() if x.startswith("child ")]
    _, pid, folder = line.split()
    proc = psutil.Process(int(pid))
    assert settles(lambda: not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE, 120)
    lines = (Path(folder) / "progress.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events[-1]["event"] == "end" and events[-1]["state"] == "stopped", events[-1]
