"""Latent expression initializer (Figure 2: "Latent Exp. Init", paper Sec. 3.1, Eq. 1-2).

From the text token embeddings (without the class token) it builds, for each of the N expressions,
``Z_0^i = [z_cls^i, s, A_0^i]`` with ``A_0^i = phi^i(D^i * T_0)`` and picks the subject token ``s``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.config import LatentConfig


class LatentInit(NamedTuple):
    tokens: Tensor  # (B, sum(k_i + 2), d): [z_cls^1, s, A^1, z_cls^2, s, A^2, ...]
    subject: Tensor  # (B, d) the selected subject token s (also s_V)
    subject_index: Tensor  # (B,) long: which text position (1-based, within the text) was selected


class LatentExpressionInit(nn.Module):
    """Length transforms, token dropout, subject selection and latent class tokens."""

    def __init__(self, cfg: LatentConfig, dim: int, text_len: int) -> None:
        super().__init__()
        self.cfg = cfg
        m = text_len - 1  # text positions after the class (bos) token
        # phi^i: (k_i, m). Init ~ N(0, 1/m) keeps A_0 at the scale of the text embeddings.
        self.length_transforms = nn.ParameterList(
            nn.Parameter(torch.randn(k, m) * m**-0.5) for k in cfg.lengths
        )
        self.class_tokens = nn.Parameter(torch.randn(len(cfg.lengths), dim) * 0.02)  # z_cls^i
        # No bias: the scores go through a softmax over the text positions, which a shared offset does not
        # change, so a bias would get an exactly-zero gradient and never learn.
        self.subject_scorer = nn.Linear(dim, 1, bias=False)

    def select_subject(self, words: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Straight-through Gumbel-softmax in training, argmax at inference; padding and eos never win.

        Args: words ``(B, m, d)``; valid ``(B, m)`` bool. Returns ``s (B, d)`` and its index ``(B,)``.
        """
        logits = self.subject_scorer(words).squeeze(-1).float()  # (B, m)
        # Candidates are words: a valid token followed by another valid one, which excludes eos.
        nxt = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], dim=1)
        candidates = valid & nxt
        # A text with no word (only bos/eos) falls back to position 0 (eos) rather than NaN.
        none = ~candidates.any(dim=1, keepdim=True)
        candidates = candidates | (none & (torch.arange(valid.shape[1], device=valid.device) == 0))
        logits = logits.masked_fill(~candidates, float("-inf"))
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.cfg.gumbel_tau, hard=True)  # (B, m), ST gradient
        else:
            # one-hot x matmul, not a gather: exports as plain ops, same as training's path.
            onehot = F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)
        subject = torch.einsum("bm,bmd->bd", onehot.to(words.dtype), words)
        return subject, onehot.argmax(dim=1) + 1

    def forward(self, text: Tensor, text_mask: Tensor) -> LatentInit:
        """Args: text embeddings ``(B, L, d)`` with the class token at 0; text_mask ``(B, L)`` bool."""
        words = text[:, 1:]  # (B, m, d): T_0 without the class token
        valid = text_mask[:, 1:].bool()
        subject, index = self.select_subject(words, valid)
        # Padding positions are zeroed so phi mixes only real tokens.
        words = words * valid[..., None].to(words.dtype)
        b, _, d = words.shape
        parts = []
        for i, (phi, p) in enumerate(zip(self.length_transforms, self.cfg.dropout)):
            w = words
            if self.training and p > 0:
                # D^i drops whole tokens (Eq. 1: a {0,1} mask over semantic tokens), no rescaling.
                keep = torch.rand(b, w.shape[1], 1, device=w.device) >= p
                w = w * keep.to(w.dtype)
            attrs = torch.einsum("km,bmd->bkd", phi.to(w.dtype), w)  # (B, k_i, d)
            cls = self.class_tokens[i].to(w.dtype).expand(b, 1, d)
            parts += [cls, subject[:, None], attrs]
        return LatentInit(torch.cat(parts, dim=1), subject, index)
