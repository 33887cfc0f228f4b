"""Training jobs in a child process, one at a time, that the app can watch and stop.

The child (``multiprocessing`` "spawn": the app has threads, so no fork) loads the base
model, limits torch to ``settings.threads`` threads at the lowest priority so the chat stays
responsive, trains, and appends one JSON line per event to ``<root>/<job>/progress.jsonl``.
While a chat evaluates its prompt (``chat.foreground``, wired by the studio to ``hold``), the
child is paused (SIGSTOP), for at most ``MAX_PAUSE_S``: the prompt then has every core, and
the first token comes as fast as on an idle machine. If the app dies, the child is continued
and stops training as if asked to.
The parent reads that file when asked for a status: it never blocks on the child. Stop sets
an event the child checks after every step; it then saves its adapter and ends. A child that
does not end within ``STOP_GRACE_S`` of a stop (or of its time limit) is terminated, and the
last checkpoint it finished saving is kept.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from training.data import TrainData
from training.errors import TrainingBusy, TrainingError
from training.settings import TrainSettings

log = logging.getLogger(__name__)
STOP_GRACE_S = 60.0  # a stopped child gets this long to save and end before it is terminated
MAX_PAUSE_S = 2.0  # a chat's prompt evaluation pauses training at most this long
ACTIVE = ("starting", "running")


@dataclass
class JobSpec:
    """What to train and where the adapter goes (``out_dir/<adapter id>/``)."""

    model: str  # a folder, hub id or .gguf path, as load_base accepts
    data: TrainData
    settings: TrainSettings
    out_dir: Path
    max_seconds: float = 3600.0
    name: str = ""
    owner: str = ""
    compare_steps: int | None = None  # set: run every method this many steps (compare.py)


class _Job:
    def __init__(self, job_id: str, spec: JobSpec, folder: Path, adapter_id: str):
        self.id, self.spec, self.folder, self.adapter_id = job_id, spec, folder, adapter_id
        self.process = None
        self.handle = None  # psutil.Process: pauses and resumes, safe against a reused pid
        self.paused = False
        self.stop_event = None
        self.started = time.monotonic()
        self.train_started: float | None = None
        self.stop_asked: float | None = None
        self.offset = 0
        self.status = {
            "id": job_id, "state": "starting", "step": 0, "total_steps": 0, "elapsed_s": 0.0,
            "remaining_s": None, "train_loss": [], "eval_loss": [], "metrics": [],
            "message": "Loading the base model...", "adapter": None, "kind": spec.settings.kind,
            "method": spec.settings.method.method, "name": spec.name, "owner": spec.owner,
            "trainable": None, "total_params": None, "compare": [], "peak_mib": None,
        }  # fmt: skip


class TrainJobs:
    """The app's training jobs: at most one runs at a time."""

    def __init__(self, root: Path, max_pause_s: float = MAX_PAUSE_S):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_pause_s = max_pause_s
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._pause_lock = threading.Lock()  # never held while taking ``_lock``
        self._current: _Job | None = None  # the job started last
        self._pauses = 0  # numbers each pause, so a late watchdog leaves a newer one alone
        self._watchdog: threading.Timer | None = None

    def start(self, spec: JobSpec) -> str:
        """Start ``spec`` in a child process; its job id. ``TrainingBusy`` when one runs."""
        import multiprocessing

        import psutil

        from training.adapters import new_id

        with self._lock:
            for job in self._jobs.values():
                self._poll(job)
                if job.status["state"] in ACTIVE:
                    raise TrainingBusy(
                        "A training job is already running; wait for it to finish or stop it "
                        "(one job at a time on this app)."
                    )
            job_id = uuid.uuid4().hex[:12]
            folder = self.root / job_id
            folder.mkdir(parents=True)
            job = _Job(job_id, spec, folder, new_id(spec.settings.kind))
            ctx = multiprocessing.get_context("spawn")
            job.stop_event = ctx.Event()
            job.process = ctx.Process(
                target=child_main,
                args=(spec, str(folder / "progress.jsonl"), job.stop_event, job.adapter_id),
                name=f"train-{job_id}",
                daemon=True,
            )
            job.process.start()
            job.handle = psutil.Process(job.process.pid)
            self._jobs[job_id] = job
            self._current = job
            return job_id

    def hold(self, busy: bool) -> None:
        """Pause the running job's child (``busy``) or let it run again: the listener for
        ``chat.foreground``. A pause ends after ``max_pause_s`` whatever happens."""
        with self._pause_lock:
            job = self._current
            if job is None:
                return
            if not busy:
                if self._watchdog is not None:
                    self._watchdog.cancel()
                    self._watchdog = None
                _resume(job)
                return
            if job.stop_asked is not None or job.status["state"] not in ACTIVE or job.paused:
                return
            try:
                job.handle.suspend()
            except Exception:  # noqa: BLE001 - ended, or not ours to pause: train on
                return
            job.paused = True
            self._pauses += 1
            self._watchdog = threading.Timer(self.max_pause_s, self._overdue, (job, self._pauses))
            self._watchdog.daemon = True
            self._watchdog.start()

    def _overdue(self, job: _Job, pause: int) -> None:
        with self._pause_lock:
            if pause == self._pauses:
                _resume(job)

    def _release(self, job: _Job) -> None:
        """Let a paused child run (before stopping or ending it)."""
        with self._pause_lock:
            _resume(job)

    def status(self, job_id: str) -> dict:
        """The job's state, step, losses and message (a copy)."""
        with self._lock:
            job = self._job(job_id)
            self._poll(job)
            return json.loads(json.dumps(job.status))

    def stop(self, job_id: str) -> dict:
        """Ask the job to end; it keeps its last finished checkpoint. Its status."""
        with self._lock:
            job = self._job(job_id)
            self._poll(job)
            if job.status["state"] in ACTIVE and job.stop_asked is None:
                job.stop_asked = time.monotonic()  # no pause from now on; end the one under way
                self._release(job)  # first: a paused child may hold the event's lock
                job.stop_event.set()
                job.status["message"] = "Stopping after the current step..."
        return self.status(job_id)

    def jobs(self) -> list[dict]:
        """Every job's status, newest first."""
        with self._lock:
            ids = list(self._jobs)
        return [self.status(i) for i in reversed(ids)]

    def running(self) -> str | None:
        """The id of the job running now, if any."""
        for s in self.jobs():
            if s["state"] in ACTIVE:
                return s["id"]
        return None

    def wait(self, job_id: str, timeout: float) -> dict:
        """Poll until the job ends or ``timeout`` seconds pass; its status (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.status(job_id)
            if s["state"] not in ACTIVE or time.monotonic() > deadline:
                return s
            time.sleep(0.2)

    def close(self) -> None:
        """Stop every running job and end the child processes."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if job.process is not None and job.process.is_alive():
                job.stop_asked = job.stop_asked or time.monotonic()
                self._release(job)
                job.stop_event.set()
                job.process.join(10)
                if job.process.is_alive():
                    job.process.terminate()
                    job.process.join(5)
            with self._lock:
                self._poll(job)

    # -- internals --

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise TrainingError(f"No training job {job_id!r}; start one first.")
        return job

    def _poll(self, job: _Job) -> None:
        """Read the child's new events; notice a child that ended or overran."""
        s = job.status
        if s["state"] in ACTIVE:
            s["elapsed_s"] = round(time.monotonic() - job.started, 1)
        for event in _read_new(job):
            _apply(job, event)
        proc = job.process
        if s["state"] not in ACTIVE:
            if proc is not None:
                proc.is_alive()  # reaps a child that has ended (no zombie left)
            return
        now = time.monotonic()
        overran = now - job.started > job.spec.max_seconds + STOP_GRACE_S
        stuck = job.stop_asked is not None and now - job.stop_asked > STOP_GRACE_S
        if proc is not None and proc.is_alive() and (overran or stuck):
            self._release(job)
            proc.terminate()
            proc.join(5)
        if proc is not None and not proc.is_alive():
            for event in _read_new(job):
                _apply(job, event)
            if s["state"] in ACTIVE:  # ended without saying so: killed, or out of memory
                kept = _last_checkpoint(job)
                s["adapter"] = kept
                if job.stop_asked is not None or overran:
                    s["state"] = "stopped"
                    s["message"] = "Stopped" + ("; the last checkpoint is kept." if kept else ".")
                else:
                    s["state"] = "failed"
                    s["message"] = (
                        f"The training process ended unexpectedly (exit code {proc.exitcode}; "
                        "often out of memory): lower the batch size or max length and try again."
                    )
                s["remaining_s"] = 0


def _resume(job: _Job) -> None:
    if job.paused:
        job.paused = False
        try:
            job.handle.resume()
        except Exception:  # noqa: BLE001 - it has ended: nothing to resume
            pass


def _read_new(job: _Job) -> list[dict]:
    path = job.folder / "progress.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(job.offset)
            chunk = f.read()
    except FileNotFoundError:
        return []
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
    job.offset += end
    events = []
    for line in chunk[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _apply(job: _Job, e: dict) -> None:
    s, kind = job.status, e.get("event")
    if kind == "start":
        s.update(state="running", total_steps=e["total"], trainable=e["trainable"],
                 total_params=e["total_params"], message="Training...")  # fmt: skip
        job.train_started = time.monotonic()
    elif kind == "step":
        s["step"] = e["step"]
        if job.train_started is not None and e["step"]:
            per = (time.monotonic() - job.train_started) / e["step"]
            s["remaining_s"] = round(per * max(0, s["total_steps"] - e["step"]), 1)
    elif kind == "loss":
        s["train_loss"].append([e["step"], e["loss"]])
    elif kind == "eval":
        s["eval_loss"].append([e["step"], e["loss"]])
    elif kind == "metrics":
        s["metrics"].append({k: v for k, v in e.items() if k != "event"})
    elif kind == "checkpoint":
        s["adapter"] = e["adapter"]
    elif kind == "compare_row":
        s["compare"].append({k: v for k, v in e.items() if k != "event"})
        s["step"] = len(s["compare"])
    elif kind == "message":
        s["message"] = e["message"]
    elif kind == "end":
        s.update(state=e["state"], message=e["message"], remaining_s=0,
                 peak_mib=e.get("peak_mib"))  # fmt: skip
        s["adapter"] = e.get("adapter") or s["adapter"]
        s["elapsed_s"] = round(time.monotonic() - job.started, 1)


def _last_checkpoint(job: _Job) -> str | None:
    from training.adapters import META, recover

    recover(job.spec.out_dir)
    done = Path(job.spec.out_dir) / job.adapter_id / META
    return job.adapter_id if done.is_file() else None


# -- the child process -------------------------------------------------------------------------


def child_main(spec: JobSpec, progress: str, stop_event, adapter_id: str) -> None:
    """The training process: bounded threads, lower priority, events as JSON lines."""
    threads = str(spec.settings.threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        os.nice(19)  # the chat in the parent wins nearly every time both want a core
    except OSError:
        pass
    _tie_to_parent(stop_event)
    with open(progress, "a", encoding="utf-8") as out:

        def report(event: dict) -> None:
            out.write(json.dumps(event) + "\n")
            out.flush()

        try:
            state, message, adapter = _train_in_child(spec, report, stop_event, adapter_id)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's message
            state, message, adapter = "failed", _failure(exc), None
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        report({"event": "end", "state": state, "message": message, "adapter": adapter,
                "peak_mib": round(peak, 1)})  # fmt: skip


def _tie_to_parent(stop_event) -> None:
    """When the app's process ends, however it ends: continue if paused (Linux: the parent-
    death signal is SIGCONT), then stop training as if asked, keeping the last checkpoint."""
    import multiprocessing

    if sys.platform == "linux":
        import ctypes
        import signal

        try:  # PR_SET_PDEATHSIG (1); also sent when the starting thread ends: a no-op then
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGCONT), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the parent's process has ended
        stop_event.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _train_in_child(spec: JobSpec, report, stop_event, adapter_id: str):
    import torch

    torch.set_num_threads(spec.settings.threads)
    started = time.monotonic()
    from training.model import load_base
    from training.run import start_model, train

    model, tokenizer = load_base(spec.model)
    if spec.compare_steps:
        return _compare_in_child(spec, (model, tokenizer), report, stop_event)
    if spec.settings.start_from:
        report({"event": "message", "message": f"Merging {spec.settings.start_from}..."})
    model = start_model(model, spec.out_dir, spec.settings.start_from)
    if stop_event.is_set():
        return "stopped", "Stopped before training began; nothing was saved.", None
    result = train(
        model, tokenizer, spec.data, spec.settings, Path(spec.out_dir),
        adapter_id=adapter_id, name=spec.name, base_model=spec.model, owner=spec.owner,
        report=report, should_stop=stop_event.is_set,
        max_seconds=max(1.0, spec.max_seconds - (time.monotonic() - started)),
    )  # fmt: skip
    return result.state, result.message, result.adapter


def _compare_in_child(spec: JobSpec, loaded, report, stop_event):
    from training.compare import METHODS, compare_methods, compare_summary

    report({"event": "start", "total": len(METHODS), "trainable": None, "total_params": None})
    rows = compare_methods(loaded, spec.data, spec.compare_steps, spec.settings,
                           report=report, should_stop=stop_event.is_set)  # fmt: skip
    state = "stopped" if stop_event.is_set() else "finished"
    return state, compare_summary(rows), None


def _failure(exc: Exception) -> str:
    from chat.errors import ChatStudioError

    if isinstance(exc, ChatStudioError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return "Out of memory while training: lower the batch size or max length and try again."
    log.exception("training failed")
    return f"Training failed ({type(exc).__name__}: {text[:300]})."
