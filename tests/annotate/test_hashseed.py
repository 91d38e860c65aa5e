"""Seed-42 worker processes: the self-check values, and a worker that dies is an error, not a hang."""

from __future__ import annotations

import os
import threading

import pytest

from rpj_tasks.annotate.hashseed import WorkerDiedError, call_with_seed42


def hash_of(obj: object) -> int:
    return hash(obj)


def die(code: int) -> None:
    os._exit(code)


def test_call_with_seed42_reproduces_the_spec_hashes() -> None:
    assert call_with_seed42(hash_of, "the") == 6599659648229272820
    assert call_with_seed42(hash_of, ("the", "cat")) == -1944465398313317419


def test_worker_that_exits_is_a_clear_error_not_a_hang() -> None:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call_with_seed42(die, 3)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    # in a thread, so that a regression (waiting forever on the dead worker) fails instead of
    # stalling the suite; the bound is a hang guard, not a speed requirement
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(300)
    assert not thread.is_alive(), "call_with_seed42 still waits on a worker that died"
    (error,) = outcome
    assert isinstance(error, WorkerDiedError), error
    assert "test_hashseed.die" in str(error) and "exited without finishing (exit code 3)" in str(error)


def test_exceptions_in_the_worker_propagate() -> None:
    with pytest.raises(ZeroDivisionError):
        call_with_seed42(divmod, 1, 0)
