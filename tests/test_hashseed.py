"""Seed-42 worker processes: the self-check values, and a worker that dies is an error, not a hang."""

from __future__ import annotations

import os

import pytest

from rpj_tasks.signals import hashseed
from rpj_tasks.signals.hashseed import WorkerDiedError, call_with_seed42


def hash_of(obj: object) -> int:
    return hash(obj)


def die(code: int) -> None:
    os._exit(code)


def test_call_with_seed42_reproduces_the_spec_hashes() -> None:
    assert call_with_seed42(hash_of, "the") == 6599659648229272820
    assert call_with_seed42(hash_of, ("the", "cat")) == -1944465398313317419


def test_worker_that_exits_is_a_clear_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashseed, "_POLL_SECONDS", 0.2)  # how often the dead worker is looked for
    with pytest.raises(WorkerDiedError) as info:
        call_with_seed42(die, 3)
    assert "test_hashseed.die" in str(info.value) and "exited without finishing" in str(info.value)


def test_exceptions_in_the_worker_propagate() -> None:
    with pytest.raises(ZeroDivisionError):
        call_with_seed42(divmod, 1, 0)
