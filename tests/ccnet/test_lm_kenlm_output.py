"""What the kenlm library prints on stderr while loading a model goes to the rpj.lm logger, not to
stderr (which an Airflow task logs at ERROR); load errors are raised unchanged."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import kenlm
import pytest

from rpj_tasks.ccnet import arpa, lm

LINES = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 4


def write_arpa(path: Path) -> str:
    buf = io.BytesIO()
    arpa.write_arpa(arpa.estimate(LINES, 3, None), buf)
    path.write_bytes(buf.getvalue())
    return path.as_uri()


def test_kenlm_banner_is_logged_not_printed(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    url = write_arpa(tmp_path / "model.arpa")
    capfd.readouterr()
    kenlm.Model(str(tmp_path / "model.arpa"))  # control: the library does print its banner on fd 2
    assert "Loading the LM will be faster" in capfd.readouterr().err

    caplog.set_level(logging.DEBUG, logger="rpj.lm")
    model = lm.load_kenlm(url)
    assert model.order == 3 and lm.load_kenlm(url) is model
    os.write(2, b"fd 2 is back\n")
    err = capfd.readouterr().err
    assert "Loading the LM" not in err and "----5---10" not in err and "fd 2 is back" in err
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "rpj.lm"]
    assert (logging.DEBUG, f"kenlm ({url}): Loading the LM will be faster if you build a binary file.") in records
    assert any(level == logging.DEBUG and message.startswith(f"kenlm ({url}): ----5---10") for level, message in records)
    assert not any(level >= logging.WARNING for level, _ in records)


def test_kenlm_load_error_is_raised_and_its_output_logged(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "broken.arpa"
    bad.write_text("not an ARPA file\n")
    caplog.set_level(logging.DEBUG, logger="rpj.lm")
    capfd.readouterr()
    with pytest.raises(OSError, match="Cannot read model"):
        lm.load_kenlm(bad.as_uri())
    assert bad.as_uri() not in lm._LMS
    os.write(2, b"fd 2 is back\n")
    err = capfd.readouterr().err
    assert "Loading the LM" not in err and "fd 2 is back" in err
    warnings = [r.getMessage() for r in caplog.records if r.name == "rpj.lm" and r.levelno == logging.WARNING]
    assert f"kenlm ({bad.as_uri()}): Loading the LM will be faster if you build a binary file." in warnings
