"""POLL_INTERVAL: the Slurm and Kubernetes backends wait on their APIs through this helper, at that interval
(their real waits run in tests/test_slurm.py and tests/test_kubernetes.py, with a cluster)."""

from __future__ import annotations

import time

from daskweak.backends.polling import poll_until


def test_poll_until_asks_until_the_condition_holds():
    answers = iter([False, False, True])
    asked = []

    def done() -> bool:
        asked.append(1)
        return next(answers)

    assert poll_until(done, interval=0.001, deadline=time.monotonic() + 600)
    assert len(asked) == 3


def test_a_long_interval_is_cut_at_the_deadline_and_not_polled_faster():
    asked = []

    def never() -> bool:
        asked.append(1)
        return False

    # An hour between polls and a deadline in half a second: asked now and once at the deadline, never in
    # between (a fixed 0.2 s poll would ask three times), and the wait does not outlast the deadline.
    assert not poll_until(never, interval=3600, deadline=time.monotonic() + 0.5)
    assert len(asked) == 2

