from __future__ import annotations

import pytest
import torch

from lvg.config import ModelConfig


def make_inputs(cfg: ModelConfig, batch: int = 2, lengths: tuple[int, ...] | None = None, seed: int = 0):
    """Random normalised images and token ids ``bos w.. eos pad..`` with the given real lengths."""
    g = torch.Generator().manual_seed(seed)
    size, text_len = cfg.encoder.img_size, cfg.preprocess.max_text_len
    image = torch.randn(batch, 3, size, size, generator=g)
    if lengths is None:
        lengths = tuple(int(x) for x in torch.randint(3, text_len + 1, (batch,), generator=g))
    ids = torch.randint(4, cfg.encoder.vocab_size, (batch, text_len), generator=g)
    mask = torch.arange(text_len)[None] < torch.tensor(lengths)[:, None]  # (B, L)
    ids[:, 0] = 0
    for i, n in enumerate(lengths):
        ids[i, n - 1] = 2
    ids = ids.masked_fill(~mask, 1)
    return image, ids, mask


@pytest.fixture
def inputs():
    return make_inputs


def grow_unchanged(base: str, grown: str, new_prefix: str, seed: int, batch: int = 2):
    """``grown`` built with ``base``'s weights: its only new tensors start with ``new_prefix`` and it gives
    ``base``'s logits exactly (whatever it adds starts at zero). Returns both models (eval mode) and the inputs."""
    from lvg.modeling import build_model

    torch.manual_seed(seed)
    old = build_model(base).eval()
    model = build_model(grown).eval()
    missing, unexpected = model.load_state_dict(old.state_dict(), strict=False)
    assert missing and all(k.startswith(new_prefix) for k in missing) and not unexpected
    image, ids, mask = make_inputs(model.cfg, batch=batch)
    with torch.no_grad():
        torch.testing.assert_close(model(image, ids, mask)["logits"], old(image, ids, mask)["logits"],
                                   rtol=0, atol=0)
    return old, model, (image, ids, mask)


def assert_zero_start_learns(model, inputs, last: torch.Tensor, behind: list[torch.Tensor], lr: float) -> None:
    """Two SGD steps on the mean probability: ``last``, a weight that starts at zero, gets a gradient at once;
    the weights ``behind`` it only from the second step (through ``last``, once it is not zero)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(2):
        opt.zero_grad()
        model(*inputs)["prob"].mean().backward()
        assert last.grad is not None and last.grad.abs().sum() > 0
        assert all((p.grad is not None and p.grad.abs().sum() > 0) == (step == 1) for p in behind), step
        opt.step()
