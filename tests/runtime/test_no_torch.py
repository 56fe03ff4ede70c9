"""The runtime works with torch made unimportable (SPEC section 2: runtime depends on config only)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

BLOCK = "import sys; sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"



def _run(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_torch_is_really_blocked():
    proc = _run("import torch")
    assert proc.returncode != 0 and "import of torch halted" in proc.stderr


def test_runtime_end_to_end_without_torch(artifacts, tmp_path):
    out = tmp_path / "r.json"
    proc = _run(
        f"""
        import json, lvg.runtime, lvg.runtime.backends, lvg.export, lvg.cli
        from lvg.runtime.grounder import Grounder
        g = Grounder.load({str(artifacts.onnx[("lvg-tiny-gres", False)])!r}, device="cpu")
        r = g.predict({str(artifacts.image)!r}, "the man on the left")
        r.save_overlay({str(tmp_path / "ov.png")!r})
        open({str(out)!r}, "w").write(r.to_json())
        loaded = sorted(m for m in sys.modules
                        if m == "torch" or m.startswith("torch.") or m.startswith("lvg.modeling"))
        print(json.dumps(loaded))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["torch"]  # only the blocking None entry
    data = json.loads(out.read_text())
    # Same answer as the in-process (torch available) runtime.
    from lvg.runtime.grounder import Grounder

    grounder = Grounder.load(artifacts.onnx[("lvg-tiny-gres", False)], device="cpu")
    ref = grounder.predict(artifacts.image, "the man on the left")
    assert data["box"] == list(ref.box) and data["mask_area"] == int(ref.mask.sum())
    assert (tmp_path / "ov.png").is_file()


def test_cli_infer_without_torch_and_torch_backend_names_the_extra(artifacts, tmp_path):
    proc = _run(
        f"""
        from lvg.cli import main
        model = {str(artifacts.onnx[("lvg-tiny", True)])!r}
        sys.argv = ["lvg", "infer", {str(artifacts.image)!r}, "dog", "--model", model, "--json"]
        main()
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["precision"] == "fp16"
    proc = _run(
        f"""
        from lvg.cli import main
        sys.argv = ["lvg", "infer", {str(artifacts.image)!r}, "dog", "--model", {str(artifacts.ckpt["lvg-tiny"])!r}]
        main()
        """
    )
    assert proc.returncode == 2
    assert "pip install 'latent-vg[torch]'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(
        f"""
        from lvg.cli import main
        sys.argv = ["lvg", "export", "--ckpt", {str(artifacts.ckpt["lvg-tiny"])!r}]
        main()
        """
    )
    assert proc.returncode == 2 and "pip install 'latent-vg[export]'" in proc.stderr
