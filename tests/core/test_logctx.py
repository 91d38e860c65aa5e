"""The log context: which shard and file an engine log line is about."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from rpj_tasks.core.logctx import current, iterate, log_context, restored, shard_label

SHARD = shard_label("2000-01", 3)


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.name, r.getMessage()) for r in caplog.records]


def test_engine_records_carry_the_shard_and_file(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = logging.getLogger("rpj.test_logctx")
    log.info("before")
    with log_context(shard=SHARD):
        log.info("%d%% done", 50)
        with log_context(file="en_head"):
            log.warning("a bad line")
            logging.getLogger("rpj_tasks.annotate.x").warning("module logger")
            logging.getLogger("some.library").warning("not ours")
            assert current() == {"shard": "2000-01/0003", "file": "en_head"}
        log.info("file done")
    log.info("after")
    assert messages(caplog) == [
        ("rpj.test_logctx", "before"),
        ("rpj.test_logctx", "[2000-01/0003] 50% done"),
        ("rpj.test_logctx", "[2000-01/0003 en_head] a bad line"),
        ("rpj_tasks.annotate.x", "[2000-01/0003 en_head] module logger"),
        ("some.library", "not ours"),
        ("rpj.test_logctx", "[2000-01/0003] file done"),
        ("rpj.test_logctx", "after"),
    ]
    assert caplog.records[2].rpj_context == "[2000-01/0003 en_head] "
    assert current() == {}


def test_percent_signs_in_the_context_are_not_format_directives(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with log_context(file="100%s"):
        logging.getLogger("rpj.test_logctx").info("%s lines", 3)
        logging.getLogger("rpj.test_logctx").info("no args %d")
    assert [m for _, m in messages(caplog)] == ["[100%s] 3 lines", "[100%s] no args %d"]


def test_other_threads_do_not_inherit_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with log_context(shard=SHARD):
        thread = threading.Thread(target=logging.getLogger("rpj.test_logctx").info, args=("from a thread",))
        thread.start()
        thread.join()
    assert messages(caplog) == [("rpj.test_logctx", "from a thread")]


def test_iterate_sets_the_context_only_while_an_item_is_made(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    log = logging.getLogger("rpj.test_logctx")

    def reader() -> Iterator[int]:
        for i in range(2):
            log.warning("reading %d", i)
            yield i

    with log_context(shard=SHARD):
        for item in iterate(reader(), file="seg-00000.warc.wet.gz"):
            log.info("consumer got %d", item)
        stopped = iterate(reader(), file="seg-00001.warc.wet.gz")
        next(stopped)
        stopped.close()  # abandoned early: nothing leaks
        assert current() == {"shard": SHARD}
    assert [m for _, m in messages(caplog)] == [
        "[2000-01/0003 seg-00000.warc.wet.gz] reading 0",
        "[2000-01/0003] consumer got 0",
        "[2000-01/0003 seg-00000.warc.wet.gz] reading 1",
        "[2000-01/0003] consumer got 1",
        "[2000-01/0003 seg-00001.warc.wet.gz] reading 0",
    ]
    assert current() == {}


def test_restored_takes_a_sent_context_and_rejects_unknown_fields() -> None:
    with restored({"file": "en_head", "shard": SHARD}):
        assert current() == {"shard": SHARD, "file": "en_head"}
    with pytest.raises(ValueError, match="unknown log context fields"), restored({"lang": "en"}):
        pass
