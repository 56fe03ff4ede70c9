"""BEiT-3 multiway encoder (Figure 2: "Encoder", the shared self-attention with per-modality experts).

Our own implementation, numerically equal to torchscale's ``BEiT3`` with the same weights, but built for
export and speed: scaled-dot-product attention, and the sequence kept as two streams (vision on expert A,
everything after it on expert B) so that no layer has to split and re-concatenate its input.

Module and parameter names follow the official BEiT-3 state dict (``beit3.encoder.layers.N.self_attn.
q_proj.A.weight`` and so on) so official checkpoints load by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.config import EncoderConfig


class Multiway(nn.Module):
    """Two experts of one module: ``A`` for vision tokens, ``B`` for text, latent and other tokens."""

    def __init__(self, make: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.A = make()
        self.B = make()


class FeedForward(nn.Module):
    """fc1 -> GELU -> sub-LN (``ffn_layernorm``) -> fc2, as torchscale's subln FFN."""

    def __init__(self, dim: int, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.ffn_layernorm = nn.LayerNorm(hidden, eps=eps)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.ffn_layernorm(F.gelu(self.fc1(x)))))


class MultiwayAttention(nn.Module):
    """Self-attention shared by all tokens with per-expert projections and sub-LN (``inner_attn_ln``)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.head_dim = d // cfg.num_heads
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, Multiway(lambda: nn.Linear(d, d)))
        self.inner_attn_ln = Multiway(lambda: nn.LayerNorm(d, eps=cfg.layernorm_eps))
        self.dropout = cfg.dropout

    def _heads(self, xa: Tensor, xb: Tensor, proj: Multiway) -> Tensor:
        # (B, Tv, d) + (B, Tt, d) -> (B, H, Tv + Tt, d/H)
        x = torch.cat([proj.A(xa), proj.B(xb)], dim=1)
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, xv: Tensor, xt: Tensor, attn_mask: Tensor | None, probe_rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Attend over the concatenated streams.

        Args:
            xv: vision stream ``(B, Tv, d)``; xt: text/latent stream ``(B, Tt, d)``.
            attn_mask: ``(B, 1, 1, Tv + Tt)`` bool, True = key may be attended; None = all keys.
            probe_rows: optional ``(R,)`` long indices of query rows whose attention probabilities
                (head-averaged, ``(B, R, Tv + Tt)``) are returned too, for attention maps.
        """
        tv = xv.shape[1]
        q = self._heads(xv, xt, self.q_proj)
        k = self._heads(xv, xt, self.k_proj)
        v = self._heads(xv, xt, self.v_proj)
        bias = None
        if attn_mask is not None:
            # An additive 0 / -inf key bias instead of the boolean mask: the same softmax (SDPA turns a
            # boolean mask into exactly this bias), but the ONNX export then adds it to the scores instead of
            # Where + IsNaN + Where over every (H, T, T) score matrix, which cost ONNX Runtime ~11% of lvg-b's
            # CPU time. The NaN guard those nodes implement is moot: vision keys are always valid, so no row
            # is fully masked. (B, 1, 1, T): building it per layer is negligible.
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~attn_mask, float("-inf")
            )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, d/H)
        probs = None
        if probe_rows is not None:
            # Explicit softmax for a handful of rows only: SDPA never materialises the full matrix.
            logits = q[:, :, probe_rows] @ k.transpose(-1, -2) * self.head_dim**-0.5  # (B, H, R, T)
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            probs = logits.float().softmax(-1).mean(1)  # (B, R, T)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, -1)  # (B, T, d)
        oa, ob = out[:, :tv], out[:, tv:]
        oa = self.out_proj.A(self.inner_attn_ln.A(oa))
        ob = self.out_proj.B(self.inner_attn_ln.B(ob))
        return oa, ob, probs


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer with multiway attention and multiway FFN."""

    def __init__(self, cfg: EncoderConfig, drop_path: float) -> None:
        super().__init__()
        d, eps = cfg.embed_dim, cfg.layernorm_eps
        self.self_attn = MultiwayAttention(cfg)
        self.self_attn_layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=eps))
        self.ffn = Multiway(lambda: FeedForward(d, cfg.ffn_dim, eps, cfg.dropout))
        self.final_layer_norm = Multiway(lambda: nn.LayerNorm(d, eps=eps))
        self.drop_path = DropPath(drop_path)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, xv: Tensor, xt: Tensor, attn_mask: Tensor | None, probe_rows: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        ln = self.self_attn_layer_norm
        av, at, probs = self.self_attn(ln.A(xv), ln.B(xt), attn_mask, probe_rows)
        xv = xv + self.drop_path(self.dropout(av))
        xt = xt + self.drop_path(self.dropout(at))
        ln = self.final_layer_norm
        xv = xv + self.drop_path(self.ffn.A(ln.A(xv)))
        xt = xt + self.drop_path(self.ffn.B(ln.B(xt)))
        return xv, xt, probs


class VisionEmbedding(nn.Module):
    """Patchify with a strided conv and prepend the visual class token."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))

    def forward(self, image: Tensor) -> Tensor:
        x = self.proj(image).flatten(2).transpose(1, 2)  # (B, d, g, g) -> (B, g*g, d)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + n, d)


class PositionTables(nn.Module):
    """``embed_positions.A`` (vision) and ``.B`` (text); both indexed from 2 (fairseq's offset)."""

    OFFSET = 2

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.A = nn.Embedding(cfg.vision_positions, cfg.embed_dim)
        self.B = nn.Embedding(cfg.max_text_positions, cfg.embed_dim)

    def vision(self, n: int) -> Tensor:
        return self.A.weight[self.OFFSET : self.OFFSET + n]  # (n, d)

    def text(self, n: int) -> Tensor:
        return self.B.weight[self.OFFSET : self.OFFSET + n]  # (n, d)


class TransformerStack(nn.Module):
    """``beit3.encoder``: position tables, the layers and the final multiway LayerNorm."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.embed_positions = PositionTables(cfg)
        # Stochastic depth grows linearly with depth (pure Python: must also work on the meta device).
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.layers = nn.ModuleList(EncoderLayer(cfg, r) for r in rates)
        self.layer_norm = Multiway(lambda: nn.LayerNorm(cfg.embed_dim, eps=cfg.layernorm_eps))


def sincos_2d(dim: int, grid: int) -> Tensor:
    """MAE's fixed 2-D position code ``(grid * grid, dim)``, rows in raster order: the first half of the
    channels encodes the row, the second half the column, each as sines and cosines of geometric
    frequencies."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")

    def code(pos: Tensor) -> Tensor:
        angle = pos.reshape(-1, 1) * freq[None]  # (grid*grid, dim/4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)  # (grid*grid, dim/2)

    return torch.cat([code(rows), code(cols)], dim=1).float()


L = TypeVar("L", nn.Linear, nn.Conv2d)


def zero_start(layer: L) -> L:
    """``layer`` with its weight and bias at zero, marked so that :func:`truncated_normal_init` leaves it so: a
    projection through which a new part joins a model, which then starts with the function it had without it."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    layer.zero_start = True  # read by truncated_normal_init
    return layer


def truncated_normal_init(module: nn.Module, std: float) -> None:
    """BEiT-3's and ViT's initialisation: every linear layer's and embedding's weight from N(0, std^2)
    truncated at 2 std, linear biases zero. Other parameters (norms, convolutions, learned tokens with
    their own initialisation) keep theirs, and so do the layers made by :func:`zero_start`."""
    for m in module.modules():
        if getattr(m, "zero_start", False):
            continue
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


class BEiT3(nn.Module):
    """Embeddings + multiway transformer, with parameter names of the official ``beit3`` module."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.vision_embed = VisionEmbedding(cfg)
        self.encoder = TransformerStack(cfg)
        self.init_positions()

    def init_positions(self) -> None:
        """Apply ``cfg.position_init`` to the patch rows of the vision position table (after the fairseq
        offset and the class token's row); ``"random"`` leaves the table as it is."""
        if self.cfg.position_init == "sincos":
            start = PositionTables.OFFSET + 1
            with torch.no_grad():
                self.encoder.embed_positions.A.weight[start : start + self.cfg.num_patches] = sincos_2d(
                    self.cfg.embed_dim, self.cfg.grid)

    def embed(self, image: Tensor, text_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Token embeddings with positions: vision ``(B, 1 + n, d)`` and text ``(B, L, d)``."""
        xv = self.vision_embed(image)
        xv = xv + self.encoder.embed_positions.vision(xv.shape[1])
        xt = self.text_embed(text_ids)
        xt = xt + self.encoder.embed_positions.text(xt.shape[1])
        return xv, xt

    @staticmethod
    def attention_mask(text_mask: Tensor, num_vision: int, num_extra: int) -> Tensor:
        """``(B, 1, 1, T)`` bool key mask: vision and extra (latent) tokens always, text where valid."""
        b = text_mask.shape[0]
        ones_v = text_mask.new_ones(b, num_vision, dtype=torch.bool)
        ones_e = text_mask.new_ones(b, num_extra, dtype=torch.bool)
        keys = torch.cat([ones_v, text_mask.bool(), ones_e], dim=1)  # (B, T)
        return keys[:, None, None, :]

    def forward(self, image: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Plain BEiT-3 (no latent expressions): final normalised tokens ``(B, 1 + n + L, d)``.

        Equal to torchscale's ``BEiT3(textual_tokens, visual_tokens, text_padding_position)["encoder_out"]``.
        """
        xv, xt = self.embed(image, text_ids)
        mask = self.attention_mask(text_mask, xv.shape[1], 0)
        for layer in self.encoder.layers:
            xv, xt, _ = layer(xv, xt, mask)
        ln = self.encoder.layer_norm
        return torch.cat([ln.A(xv), ln.B(xt)], dim=1)
