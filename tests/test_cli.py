"""lvg/cli.py: the console entry point itself (the commands have their own tests)."""

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
