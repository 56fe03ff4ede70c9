"""The one dispatch point: implementation choice, the env override, and life without triton."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lvg.kernels as kernels
from lvg.errors import MissingDependencyError
from lvg.kernels.vci import vci_reference
from tests.kernels.conftest import HAS_TRITON


def test_importing_the_kernels_does_not_import_triton():
    code = "import sys, lvg.kernels, lvg.kernels.vci; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_auto_is_triton_exactly_on_cuda(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    want = "triton" if torch.cuda.is_available() and HAS_TRITON else "reference"
    assert kernels.resolve_impl("auto") == want
    if want == "reference":
        assert kernels.get_vci("auto") is vci_reference


def test_env_var_overrides_auto_only(monkeypatch):
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    assert kernels.resolve_impl("auto") == "triton"
    assert kernels.resolve_impl("reference") == "reference"
    monkeypatch.setenv(kernels.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match=kernels.ENV_VAR):
        kernels.resolve_impl("auto")
    with pytest.raises(ValueError, match="unknown kernel impl"):
        kernels.resolve_impl("cuda")


def test_without_triton_the_reference_works_and_triton_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    assert not kernels.triton_available()
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(2, 9, 4, generator=g), torch.randn(2, 4, generator=g)
    a, c = torch.randn(2, 3, 4, generator=g), torch.randn(5, 4, generator=g)
    out = kernels.visual_concept_injection(v, t, a, c, impl="reference")
    assert out.attrs.shape == (2, 3, 4) and out.mask.shape == (2, 9)
    with pytest.raises(MissingDependencyError) as err:
        kernels.get_vci("triton")
    assert "gpu" in str(err.value)
