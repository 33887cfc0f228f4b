"""The decode thread count follows the machine: pure logic of ``ThreadTuner`` on simulated steps."""

import subprocess
import sys
import time

from chat.backends.threads import MAX_WAIT_S, SPARE_EVERY_S, ThreadTuner, system_spare_seconds

QUIET = {1: 0.014, 2: 0.009}  # seconds a step takes on 1 and 2 threads (measured, 2 cores)
BUSY = {1: 0.014, 2: 0.040}  # one core taken by another process
INGEST = {1: 0.018, 2: 0.300}  # the app's own ingest embeds on both cores (measured)
CORES = 2


class Machine:
    """Steps of a simulated decode on 2 cores: each takes what its thread count costs now,
    and the cores neither the decode nor ``others`` use are spare (what the tuner reads)."""

    def __init__(self, spare_known: bool = True):
        self.now = 0.0
        self.costs = QUIET
        self.others = 0  # cores other work at the same priority keeps busy
        self.spare = 0.0
        cpu_spare = (lambda: self.spare) if spare_known else (lambda: None)
        self.tuner = ThreadTuner(max_threads=CORES, clock=lambda: self.now, cpu_spare=cpu_spare)

    def set(self, costs: dict, others: int) -> None:
        self.costs, self.others = costs, others

    def run(self, steps: int) -> list[int]:
        used = []
        for _ in range(steps):
            n = self.tuner.threads(1)
            self.tuner.record(n, 1, self.costs[n])
            self.now += self.costs[n]
            self.spare += max(0, CORES - n - self.others) * self.costs[n]
            used.append(n)
        return used


def test_on_a_quiet_machine_it_keeps_every_core_and_looks_rarely():
    machine = Machine()
    used = machine.run(2000)  # 18 s
    assert machine.tuner.current == 2
    assert used.count(1) <= 40  # a few tries of one thread, each lost


def test_when_a_core_is_taken_it_moves_to_one_thread_within_a_few_steps():
    machine = Machine()
    machine.run(2000)  # long enough that a try of 1 thread waits the longest
    machine.set(BUSY, others=1)
    used = machine.run(40)
    assert machine.tuner.current == 1
    assert used.index(1) <= 2 * 4 + 1  # the change is seen in 4 steps, then 1 is tried
    assert used[-20:] == [1] * 20


def test_when_the_core_comes_back_it_returns_to_every_thread():
    machine = Machine()
    machine.run(500)
    machine.set(BUSY, others=1)
    machine.run(2000)
    assert machine.tuner.current == 1
    machine.set(QUIET, others=0)
    start = machine.now
    used = machine.run(int((MAX_WAIT_S + 1) / QUIET[1]))
    assert machine.tuner.current == 2 and used[-1] == 2
    assert machine.now - start <= MAX_WAIT_S + 1


def test_fixed_threads_turn_the_tuning_off():
    tuner = ThreadTuner(fixed=3)
    for _ in range(50):
        assert tuner.threads(1) == 3
        tuner.record(3, 1, 0.01)
    assert tuner.batch_threads() >= 3 and tuner.switches == 0


def test_slow_steps_on_one_thread_do_not_send_it_trying_more():
    """During an ingest one thread's steps swing, and a try of two threads costs most."""
    machine = Machine(spare_known=False)  # on step times alone
    machine.set({1: 0.016, 2: 0.300}, others=1)
    machine.run(200)
    assert machine.tuner.current == 1
    used = []
    for i in range(400):  # steps that swing between 16 and 40 ms
        machine.set({1: 0.040 if (i // 4) % 2 else 0.016, 2: 0.300}, others=1)
        used += machine.run(1)
    assert used.count(2) <= 3  # only the rare scheduled tries, at most every 4 s


def test_with_no_core_to_spare_it_never_tries_more_threads():
    """The app's ingest keeps the other core busy: a try of two threads would cost a step
    of 300 ms, so none is made; once the core is free again, two are tried within a second."""
    machine = Machine()
    machine.set(INGEST, others=1)
    used = machine.run(3000)  # 54 s
    assert machine.tuner.current == 1
    assert used[20:].count(2) == 0  # after the first few steps that saw the change
    machine.set(QUIET, others=0)
    used = machine.run(200)
    assert machine.tuner.current == 2
    assert used.index(2) * QUIET[1] < 1.0  # seconds of one-thread steps before the try


def test_without_the_spare_figure_it_tries_on_step_times_alone():
    machine = Machine(spare_known=False)
    machine.set(INGEST, others=1)
    used = machine.run(3000)
    assert machine.tuner.current == 1
    assert 3 <= used[20:].count(2) <= 20  # the scheduled tries, each lost at its first step


def test_one_very_slow_step_moves_to_fewer_threads_at_once():
    """An ingest began while the app waited for its next visitor: its first step on two
    threads is 30 times the usual, and the next ones are on one thread."""
    machine = Machine()
    machine.run(2000)
    assert machine.tuner.current == 2
    machine.set(INGEST, others=1)
    used = machine.run(100)
    assert used[0] == 2 and used[1:] == [1] * 99


def test_a_hiccup_on_a_quiet_machine_costs_a_moment_on_one_thread():
    machine = Machine()
    machine.run(2000)
    machine.set({1: QUIET[1], 2: 5 * QUIET[2]}, others=0)
    machine.run(1)  # one step five times the usual (a page fault, another program's moment)
    machine.set(QUIET, others=0)
    used = machine.run(200)
    assert used[0] == 1 and machine.tuner.current == 2
    # two threads are tried again once the spare core is seen, a quarter of a second later
    assert used.index(2) * QUIET[1] <= SPARE_EVERY_S  # (it took 0.5 s before)


def test_a_core_running_niced_work_counts_as_spare():
    """The app's ingest embeds at nice 10, and gives way to a decoding thread: its core is
    one more threads may use. A process at the same priority is not."""

    def spare_rate(nice: int) -> float:
        code = f"import os, time\nos.nice({nice})\nend = time.time() + 1.5\n"
        code += "while time.time() < end: pass"
        proc = subprocess.Popen([sys.executable, "-c", code])
        try:
            time.sleep(0.3)  # started and spinning
            before, t0 = system_spare_seconds(), time.monotonic()
            time.sleep(1.0)
            return (system_spare_seconds() - before) / (time.monotonic() - t0)
        finally:
            proc.kill()
            proc.wait()

    assert spare_rate(19) - spare_rate(0) > 0.5
