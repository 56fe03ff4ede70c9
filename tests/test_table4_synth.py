"""benchmarks/table4_synth.py: Table 4 from evaluation folders (on vs off paired by seed), as a real CLI run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "table4_synth.py"


def _evals(folder: Path, miou: float, rec: float, relation: float) -> Path:
    """A folder shaped as `lvg eval --json` and bench_synth_kinds.py write it, with chosen headline values."""
    folder.mkdir(parents=True)
    per = {"input": {"mIoU": miou - 0.01, "oIoU": 0.5}, "latent_1": {"mIoU": miou, "oIoU": 0.5}}
    ris = {"mIoU": miou, "oIoU": miou - 0.05, "prec@0.5": 0.7, "prec@0.9": 0.3, "acc@0.5": rec,
           "text_swap": {"mIoU": 0.15, "oIoU": 0.1, "n": 8}, "per_expression": per, "task": "ris"}
    (folder / "ris.json").write_text(json.dumps(ris))
    (folder / "gres.json").write_text(json.dumps({"gIoU": miou + 0.05, "cIoU": miou, "N-acc": 1.0}))
    (folder / "val.json").write_text(json.dumps({"mIoU": miou - 0.02}))
    kinds = {k: {"right_object": v} for k, v in (("attribute", 0.7), ("position", 0.75), ("relation", relation))}
    (folder / f"synth_kinds_{folder.name}.json").write_text(json.dumps({"kinds": kinds}))
    return folder


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_table4_pairs_runs_by_seed_and_writes_the_json(tmp_path: Path) -> None:
    on = [_evals(tmp_path / "on1", 0.64, 0.72, 0.82), _evals(tmp_path / "on2", 0.66, 0.74, 0.86)]
    off = [_evals(tmp_path / "off1", 0.62, 0.70, 0.80), _evals(tmp_path / "off2", 0.63, 0.75, 0.78)]
    start = _evals(tmp_path / "start", 0.65, 0.73, 0.84)
    out = tmp_path / "results" / "t4.json"
    proc = _run("--on", *on, "--off", *off, "--start-on", start, "--start-off", off[0], "--what", "pair", "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = {r["metric"]: r for r in json.loads(out.read_text())["table"]}
    miou = rows["RIS mIoU"]
    assert miou["on"] == [0.64, 0.66] and miou["off"] == [0.62, 0.63]
    assert miou["on_minus_off"] == pytest.approx([0.02, 0.03])
    assert miou["on_minus_off_mean"] == pytest.approx(0.025)
    assert rows["REC Acc@0.5"]["on_minus_off"] == pytest.approx([0.02, -0.01])  # a seed against: kept, not hidden
    assert rows["right object: relation"]["on_minus_off_mean"] == pytest.approx(0.05)
    assert rows["RIS mIoU"]["start_on"] == [0.65] and rows["RIS mIoU"]["start_off"] == [0.62]
    line = "| RIS mIoU | 0.650 / 0.620 | 0.640 / 0.660 (0.650) | 0.620 / 0.630 (0.625) | **+0.025** (+0.020, +0.030) |"
    assert line in proc.stdout
    result = json.loads(out.read_text())
    assert result["what"] == "pair" and result["per_expression_ris"][str(on[0])]["latent_1"]["mIoU"] == 0.64
    assert result["runs"]["off"][str(off[1])]["gres"]["gIoU"] == pytest.approx(0.68)  # the evaluations, in full


def test_table4_refuses_unpaired_arms_and_incomplete_folders_in_one_line(tmp_path: Path) -> None:
    on = _evals(tmp_path / "on1", 0.64, 0.72, 0.82)
    off = _evals(tmp_path / "off1", 0.62, 0.70, 0.80)
    proc = _run("--on", on, "--off", off, off)
    assert proc.returncode == 2 and "pair them by seed" in proc.stderr and "Traceback" not in proc.stderr
    (off / "synth_kinds_off1.json").unlink()
    proc = _run("--on", on, "--off", off)
    assert proc.returncode != 0 and "exactly one synth_kinds_" in proc.stderr and "Traceback" not in proc.stderr
    (on / "gres.json").write_text("{not json")
    proc = _run("--on", on, "--off", on)
    assert proc.returncode != 0 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
