"""The decode thread count follows the machine: pure logic of ``ThreadTuner`` on simulated steps."""

from chat.backends.threads import MAX_WAIT_S, ThreadTuner

QUIET = {1: 0.014, 2: 0.009}  # seconds a step takes on 1 and 2 threads (measured, 2 cores)
BUSY = {1: 0.014, 2: 0.040}  # one core taken by another process


class Machine:
    """Steps of a simulated decode: each takes what its thread count costs now."""

    def __init__(self):
        self.now = 0.0
        self.costs = QUIET
        self.tuner = ThreadTuner(max_threads=2, clock=lambda: self.now)

    def run(self, steps: int) -> list[int]:
        used = []
        for _ in range(steps):
            n = self.tuner.threads(1)
            self.tuner.record(n, 1, self.costs[n])
            self.now += self.costs[n]
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
    machine.costs = BUSY
    used = machine.run(40)
    assert machine.tuner.current == 1
    assert used.index(1) <= 2 * 4 + 1  # the change is seen in 4 steps, then 1 is tried
    assert used[-20:] == [1] * 20


def test_when_the_core_comes_back_it_returns_to_every_thread():
    machine = Machine()
    machine.run(500)
    machine.costs = BUSY
    machine.run(2000)
    assert machine.tuner.current == 1
    machine.costs = QUIET
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
    machine = Machine()
    machine.costs = {1: 0.016, 2: 0.300}
    machine.run(200)
    assert machine.tuner.current == 1
    used = []
    for i in range(400):  # steps that swing between 16 and 40 ms
        machine.costs = {1: 0.040 if (i // 4) % 2 else 0.016, 2: 0.300}
        used += machine.run(1)
    assert used.count(2) <= 3  # only the rare scheduled tries, at most every 4 s
