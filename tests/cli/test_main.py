"""lvg/cli/__init__.py: the console entry point itself (the commands have their own tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lvg
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


def _lvg_command() -> list[str]:
    import shutil

    exe = shutil.which("lvg") or str(Path(sys.executable).with_name("lvg"))
    return [exe] if Path(exe).exists() else [sys.executable, "-m", "lvg.cli"]


def _files_the_package_root_imports() -> set[str]:
    """Paths, relative to the package folder, of the lvg modules a bare `import lvg` loads."""
    probe = (
        "import sys, lvg, pathlib; root = pathlib.Path(lvg.__file__).parent; "
        "print('\\n'.join(str(pathlib.Path(m.__file__).relative_to(root)) for n, m in sys.modules.items() "
        "if n.split('.')[0] == 'lvg' and getattr(m, '__file__', None)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    files = set(out.split())
    assert "__init__.py" in files and "cli/__init__.py" not in files, files
    return files


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    return time.perf_counter() - start


@pytest.mark.parametrize("entry", ["console-script", "module"])
def test_sigint_at_any_moment_of_start_up_exits_130_without_a_traceback(micro, entry: str) -> None:
    # Ctrl-C while lvg's modules import, while the model loads, while it runs: one line at most, exit 130, no
    # traceback. Before the interpreter runs a line of lvg (its own start-up, its `site` import, finding the
    # lvg package) nothing of lvg's can act: those cases (no frame of lvg in the traceback, or death by the
    # signal) are counted, not judged.
    command = _lvg_command() if entry == "console-script" else [sys.executable, "-m", "lvg.cli"]
    command += ["infer", str(micro.image), "the man on the left", "--model", str(micro.onnx)]
    root_files = _files_the_package_root_imports()
    cli_source = (Path(lvg.__file__).parent / "cli" / "__init__.py").read_text().splitlines()
    handler_line = 1 + next(i for i, line in enumerate(cli_source) if "signal.signal(signal.SIGINT" in line)
    # The moments are shares of a whole run's time here and now (~1 s on an idle 2-core machine): on a loaded
    # machine the interpreter's own start-up lasts longer, and fixed delays would all land inside it.
    whole = min(_timed(command) for _ in range(2))
    codes = []
    for delay in [whole * f for f in [i * 0.02 for i in range(16)] + [0.5, 0.8]]:
        # SIGINT at its default in the child: a suite started in the background of a non-interactive shell (nohup
        # ... &) inherits it ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_default_sigint)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        # Before any line of lvg: a traceback without an lvg frame, or the interpreter's bare "KeyboardInterrupt"
        # when the signal lands while it is still starting up.
        early = "Traceback" in stderr or stderr.strip() == "KeyboardInterrupt"
        # What `import lvg` runs (the package root and the modules it imports) runs before lvg.cli exists to
        # install a handler, and so do lvg.cli's own lines above its handler (its stdlib imports): start-up too.
        frames = re.findall(r'File "[^"]*/lvg/([^"]*)", line (\d+)', stderr)
        if early and all(f in root_files or (f == "cli/__init__.py" and int(n) < handler_line) for f, n in frames):
            codes.append("start-up")
            continue
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, (delay, stderr)
        assert proc.returncode in (130, -signal.SIGINT, 0), (delay, proc.returncode, stderr)
        assert stderr.strip() in ("", "interrupted") or proc.returncode == 0, (delay, stderr)
        codes.append(proc.returncode)
    assert codes.count(130) >= len(codes) // 2 and codes.count("start-up") <= 4, codes


def test_a_signal_an_extension_import_turned_into_an_importerror_still_exits_130() -> None:
    # A C extension whose initialisation a Ctrl-C interrupts reports "ImportError: initialization failed"
    # (pybind11 does), not KeyboardInterrupt: the command must still end as interrupted, not as a bug.
    import typer

    from lvg.cli._common import handle_errors, on_signal

    @handle_errors
    def command() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        with pytest.raises(typer.Exit) as exit_info:
            command()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit_info.value.exit_code == 130


def test_a_signal_that_lands_in_a_finalizer_is_delivered_again() -> None:
    # Python can only print ("Exception ignored in ...") a KeyboardInterrupt raised inside a __del__; the CLI
    # sends the signal again so that it unwinds the command instead.
    from lvg.cli._common import on_signal, redeliver_lost_signal

    class Finalised:
        def __del__(self) -> None:
            raise KeyboardInterrupt  # what on_signal raises when the signal arrives during a finalizer

    previous, hook = signal.signal(signal.SIGINT, on_signal), sys.unraisablehook
    sys.unraisablehook = lambda info: redeliver_lost_signal(info) or hook(info)
    try:
        with pytest.raises(KeyboardInterrupt):
            Finalised()  # collected at once
            time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = hook
