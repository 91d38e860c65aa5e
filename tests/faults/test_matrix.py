"""The fault matrix (``cases.py``, rendered as ``docs/FAULTS.md``): one test per case, each a real
``rpj`` run over the 4-shard sample with the fault injected, then a rerun once it is repaired.

Per case: (a) the clean reference run, shared by the session; (b) inject, run, check the exit
status and the one clear message, that nothing partial is visible, that the other shards finished
and the counters; (c) repair, rerun, and compare every output with the reference byte for byte.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cases import (
    CASES,
    CHECKS,
    COUNTED,
    EXIT,
    IDENTICAL,
    MESSAGE,
    OTHERS,
    PARTIAL,
    REGENERATE,
    REPAIRED,
    SHARD,
    SHARDS,
    Case,
    render,
)
from fault_harness import REPO, Harness, Reference, build_reference, diff, outputs


class PendingGap(AssertionError):
    """A check that a case's pending work will make pass."""


class Checks:
    """Assertions named after the matrix's checks: those the case's ``pending`` names are collected
    (and raised together at the end as PendingGap, the xfail), any other failure fails at once."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.gaps: list[str] = []

    def __call__(self, name: str, ok: bool, detail: str) -> None:
        if ok:
            return
        pending = self.case.pending
        if pending is not None and (pending.checks is None or name in pending.checks):
            self.gaps.append(f"{name}: {detail}")
            return
        raise AssertionError(f"{self.case.id}: {name}: {detail}")

    def finish(self) -> None:
        if self.gaps:
            raise PendingGap(
                f"{self.case.id} (pending: {self.case.pending.reason if self.case.pending else ''}): " + " | ".join(self.gaps)
            )


def _param(case: Case) -> Any:
    marks = [getattr(pytest.mark, m) for m in case.marks]
    if case.pending is not None:
        marks.append(pytest.mark.xfail(strict=True, raises=PendingGap, reason=f"pending: {case.pending.reason}"))
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return build_reference(tmp_path_factory.mktemp("faults-reference"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[tuple[str, Any]]:
    from moto_s3 import moto_s3

    with moto_s3() as (endpoint, client):
        client.create_bucket(Bucket="rpj-faults")
        yield endpoint, client


@pytest.fixture
def harness(request: pytest.FixtureRequest, reference: Reference, tmp_path: Path) -> Iterator[Harness]:
    case: Case = request.param
    s3 = request.getfixturevalue("s3_server") if case.source == "s3" else None
    h = Harness(tmp_path, reference, case, s3)
    with contextlib.closing(h):
        yield h


def _tail(procs: list[Any], lines: int = 6) -> str:
    return " / ".join(ln for p in procs for ln in p.stderr.splitlines()[-lines:])


def _message(case: Case, h: Harness, procs: list[Any], check: Checks) -> None:
    """A failure prints one ``rpj:`` line naming its cause (with the expected words) and no
    traceback, besides its consequences (a hash-group member skipped, the closing count of failed
    shards); a run that goes on logs the expected words in one line."""
    words = [w.format(segment=h.segment_path(SHARD).rsplit("/", 1)[1]) for w in case.message]
    consequences = (" skipped: it needs the hashes of shard ", " shards failed: ")
    for proc in procs:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        check(MESSAGE, "Traceback" not in proc.stderr, f"a traceback on stderr, ending: {_tail([proc], 3)}")
        if proc.returncode != 0 and not case.killed:
            rpj_lines = [ln for ln in lines if ln.startswith("rpj:") and not any(c in ln for c in consequences)]
            check(MESSAGE, len(rpj_lines) == 1, f"expected one `rpj:` line on stderr, got {rpj_lines}")
            check(MESSAGE, all(w in "".join(rpj_lines) for w in words), f"{rpj_lines} lacks one of {words}")
        elif words:
            check(MESSAGE, any(all(w in ln for w in words) for ln in lines), f"no stderr line has all of {words}")


def _counted(case: Case, h: Harness, check: Checks) -> None:
    for count in case.counts:
        record = h.record(count.record, count.shard)
        got = None if record is None else record["counts"].get(count.name, 0)
        want = count.value + (h.ref.count(count.shard, count.name) if count.delta else 0)
        check(COUNTED, got == want, f"{count.name} in the {count.record} record of shard {count.shard}: {got}, expected {want}")
    if case.summary:
        bad = h.summary()["bad_records"]
        for count in case.counts:
            if count.name.startswith("wet.skipped.") and not count.delta:
                check(COUNTED, bad.get(count.name) == count.value, f"rpj summary's bad records: {bad}")


@pytest.mark.slow
@pytest.mark.parametrize("harness", [_param(c) for c in CASES], indirect=True)
def test_fault(harness: Harness) -> None:
    h, case = harness, harness.case
    check = Checks(case)

    # (b) the fault
    if case.inject is not None:
        case.inject(h)
    procs = h.run(case.args, fault=h.fault, extra=case.registry, copies=case.concurrent)
    codes = [p.returncode for p in procs]
    check(
        EXIT, all(code in case.exit for code in codes), f"exit {codes}, expected one of {case.exit}; stderr ends: {_tail(procs)}"
    )
    _message(case, h, procs, check)
    if not case.killed:
        check(PARTIAL, not h.temp_files(), f"temp files left: {h.temp_files()}")
    check(PARTIAL, not h.incomplete_records(), "; ".join(h.incomplete_records()))
    for shard in case.failed:
        check(PARTIAL, h.record("ccnet", shard) is None, f"shard {shard} failed but has a CCNet record")
    unfinished = [s for s in case.finished if h.record("ccnet", s) is None]
    check(OTHERS, not unfinished, f"shards {unfinished} have no CCNet record")
    _counted(case, h, check)
    if case.verify is not None:
        case.verify(h, check)
    if case.identical:
        got, want = outputs(h.state()), outputs(h.ref.state)
        check(IDENTICAL, got == want, diff(got, want))

    # (c) repaired and run again
    if case.repair is not None:
        case.repair(h)
        (again,) = h.run((*case.args, *case.rerun))
        check(REPAIRED, again.returncode == 0, f"the rerun exited {again.returncode}; stderr ends: {_tail([again])}")
        check(REPAIRED, h.state() == h.ref.state, diff(h.state(), h.ref.state))
        check(REPAIRED, not h.temp_files(), f"temp files left after the rerun: {h.temp_files()}")
        check(REPAIRED, not h.incomplete_records(), "; ".join(h.incomplete_records()))
        if case.verify_after is not None:
            case.verify_after(h, check)
    check.finish()


def test_cases_are_consistent() -> None:
    """Shard sets within the sample and pending checks that exist (a typo would make a check vacuous)."""
    for case in CASES:
        assert set(case.failed) | set(case.finished) <= set(SHARDS), case.id
        assert not set(case.failed) & set(case.finished), case.id
        if case.pending is not None and case.pending.checks is not None:
            assert case.pending.checks <= set(CHECKS), (case.id, case.pending.checks - set(CHECKS))


def test_faults_doc_is_generated_from_the_cases() -> None:
    doc = REPO / "docs" / "FAULTS.md"
    assert doc.exists() and doc.read_text() == render(), f"docs/FAULTS.md is out of date: regenerate it with `{REGENERATE}`"
