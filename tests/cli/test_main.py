"""lvg/cli/__init__.py: the console entry point itself (the commands have their own tests)."""

from __future__ import annotations

import os
import sys

import pytest

from lvg.cli import main


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setattr(sys, "argv", ["lvg", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_entry_point_makes_openmp_wait_passively_unless_the_user_chose(monkeypatch, capsys) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _run(monkeypatch, capsys).strip()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    _run(monkeypatch, capsys)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_usage_errors_are_one_line_with_exit_2(monkeypatch, capsys) -> None:
    cases = [
        (["lvg", "data", "synth", "--out", "x", "--images", "0"], "--images"),
        (["lvg", "infer", "photo.jpg"], "see 'lvg infer --help'"),  # a missing argument
        (["lvg", "infer", "photo.jpg", "a cat", "--no-such-option"], "--no-such-option"),
        (["lvg", "no-such-command"], "no-such-command"),
    ]
    for argv, needle in cases:
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, (argv, err)
    # A command's own error keeps its code and message; --help still exits 0.
    monkeypatch.setattr(sys, "argv", ["lvg", "infer", "missing.jpg", "a cat"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error:")
    monkeypatch.setattr(sys, "argv", ["lvg", "infer", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0 and "Usage" in capsys.readouterr().out
