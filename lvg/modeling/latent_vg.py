"""The Latent-VG model (Figure 2): encoder + latent expressions + SD + VCI + heads + prediction (Eq. 9).

Token sequence through the encoder (SPEC 3.2)::

    [s_V, v_1..v_n | t_cls, t_1..t_m, pad.. | z_cls^1, s, a^1.. | z_cls^2, s, a^2..]
     vision stream (expert A)  | text + latent stream (expert B)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lvg.config import ModelConfig
from lvg.kernels import get_vci, resolve_impl
from lvg.modeling.candidate_position import CandidatePosition
from lvg.modeling.concept_injector import ConceptInjector
from lvg.modeling.empty_head import EmptyHead
from lvg.modeling.encoder import BEiT3, truncated_normal_init
from lvg.modeling.latent_init import LatentExpressionInit
from lvg.modeling.mask_refiner import MaskRefiner
from lvg.modeling.pixel_decoder import PixelDecoder
from lvg.modeling.shape_branch import ShapeBranch
from lvg.modeling.shape_match import ShapeMatch
from lvg.modeling.stem_tokens import StemTokens
from lvg.modeling.subject_distributor import SubjectDistributor
from lvg.modeling.token_heads import TokenMLP

# Which top-level submodules make up each part reported by `lvg info` (Table 10's breakdown).
PARTS = {
    "backbone": ("beit3",),
    "latent_expressions": ("latent_init", "concept_injectors", "latent_heads", "subject_distributor"),
    "heads": ("text_head", "pixel_decoder", "empty_head", "stem_tokens", "mask_refiner",
              "candidate_position", "shape_branch", "shape_match"),
}


def _add_to_patches(xv: Tensor, extra: Tensor) -> Tensor:
    """The vision tokens ``xv`` ``(B, 1+n, d)`` with ``extra`` ``(B, n, d)`` added to the patch tokens; the class
    token (``s_V``'s slot with latent expressions on) is left as it is."""
    return torch.cat([xv[:, :1], xv[:, 1:] + extra.to(xv.dtype)], dim=1)  # (B, 1+n, d)


class LatentVG(nn.Module):
    """Referring segmentation / grounding model. Build it with :func:`lvg.modeling.build_model`.

    ``forward(image, text_ids, text_mask)`` takes

    - ``image``: ``(B, 3, S, S)`` float, normalised (S = ``cfg.encoder.img_size``, 480 for all variants);
    - ``text_ids``: ``(B, L)`` int64 token ids, ``bos ids eos pad..`` (L = ``cfg.preprocess.max_text_len``);
    - ``text_mask``: ``(B, L)`` bool, True for real tokens;

    and returns a dict:

    - ``prob`` ``(B, S/m, S/m)``: the averaged sigmoid map of Eq. 9, ``m = head.map_stride`` (4 or 2;
      ``cfg.prob_size = S/m``);
    - ``logits`` ``(B, 1 + N, S/m, S/m)``: per-expression logits (input expression first);
    - ``expression_prob`` ``(B, 1 + N, S/m, S/m)``: their sigmoids, each expression's own map;
    - ``text_embedding`` ``(B, E)`` = ``t_o``; ``latent_embeddings`` ``(B, N, E)`` = ``z_o^i``;
    - ``patch_tokens`` ``(B, n, d)``: the encoder's last-layer vision tokens after its layer norm, in raster
      order of the ``g x g`` patch grid;
    - ``shape_grid`` ``(B, n, w)`` (``head.shape_branch`` only): the shape branch's patch-grid features, same
      order;
    - ``shape_word_logits`` ``(B, 1 + S)`` and ``patch_shape_logits`` ``(B, n, S)`` (``head.shape_match`` only):
      the sentence's shape word (0: none) and each patch's shape, as :class:`ShapeMatch` names them;
    - ``no_target_logit`` ``(B,)`` (GRES variants only);
    - ``subject_index`` ``(B,)`` the text position chosen as subject (latent variants only);
    - ``patch_mask`` ``(B, n)`` bool, the last layer's target-patch selection (VCI variants only);
    - ``attention`` ``(B, 1 + N, g, g)`` with ``return_attention=True``: each expression's class-token
      attention over the patches, averaged over heads and layers (paper Fig. 4/7).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc, lat, head = cfg.encoder, cfg.latent, cfg.head
        d, text_len = enc.embed_dim, cfg.preprocess.max_text_len
        # Chosen once, here: the model never switches kernels after it is built.
        self.kernel_impl = resolve_impl(cfg.kernel_impl)
        self.beit3 = BEiT3(enc)
        if lat.enabled:
            self.latent_init = LatentExpressionInit(lat, d, text_len)
            self.subject_distributor = SubjectDistributor(lat) if lat.subject_distributor else None
            if lat.concept_injector:
                vci = get_vci(self.kernel_impl)
                # One injector between each pair of layers: after the last layer the attribute tokens feed
                # nothing (only class tokens reach the heads), so an injector there would be dead weight.
                self.concept_injectors = nn.ModuleList(
                    ConceptInjector(lat, d, vci, enc.layernorm_eps) for _ in range(enc.depth - 1)
                )
            else:
                self.concept_injectors = None
            self.latent_heads = nn.ModuleList(
                TokenMLP(d, head.mlp_hidden, head.embed_dim) for _ in range(lat.num_expressions)
            )
            # A device tensor of the class slots for index_select (the Python ints, lat.class_slots, slice
            # without a device sync).
            self.register_buffer("latent_cls_index", torch.tensor(lat.class_slots, dtype=torch.long),
                                 persistent=False)
        self.text_head = TokenMLP(d, head.mlp_hidden, head.embed_dim)
        self.pixel_decoder = PixelDecoder(head, enc)
        self.stem_tokens = (StemTokens(head.image_stem, enc.patch_size, d, head.map_stride, head.stem_tokens_width)
                            if head.stem_tokens else None)
        self.shape_branch = (ShapeBranch(head.shape_branch, enc.patch_size, head.neck_dim,
                                         d if head.shape_branch_tokens else 0, head.shape_branch_context,
                                         head.embed_dim if head.shape_branch_logits else 0)
                             if head.shape_branch else None)
        self.shape_match = (ShapeMatch(d, self.shape_branch.channels, head.shape_match)
                            if head.shape_match and self.shape_branch is not None else None)
        self.mask_refiner = MaskRefiner(head.image_stem, head.mask_refine) if head.mask_refine else None
        self.candidate_position = (CandidatePosition(cfg.prob_size, head.embed_dim)
                                   if head.candidate_positions else None)
        self.empty_head = EmptyHead(d, head.empty_heads, enc.layernorm_eps) if head.gres else None
        self._pyramid = {i - 1: j for j, i in enumerate(head.pyramid_layers)}  # layer index -> level slot
        if enc.init_std > 0:
            truncated_normal_init(self, enc.init_std)
            self.beit3.init_positions()  # the truncated normal overwrote the position code

    def _read_shape_branch(self, image: Tensor, xv: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The shape branch's grid ``(B, w, g, g)`` and its projection into the decoder's features ``(B, c, g, g)``
        (both None without the branch), and the vision tokens ``xv`` ``(B, 1+n, d)`` with its share added
        (``head.shape_branch_tokens``)."""
        if self.shape_branch is None:
            return xv, None, None
        grid = self.shape_branch.grid(image)  # (B, w, g, g)
        if self.cfg.head.shape_branch_tokens:
            xv = _add_to_patches(xv, self.shape_branch.tokens(grid))
        return xv, grid, self.shape_branch.map_features(grid)

    def _add_branch_logits(self, logits: Tensor, grid: Tensor, emb: Tensor) -> Tensor:
        """The maps ``(B, 1+N, h, w)`` plus the shape branch's term for each expression ``emb`` ``(B, 1+N, E)``
        from its grid ``(B, w, g, g)`` (``head.shape_branch_logits``), gated by each map's own detached sigmoid
        with ``head.shape_branch_logits_gate``."""
        term = self.shape_branch.logits(grid, emb, logits.shape[-2:])  # (B, 1+N, h, w)
        if self.cfg.head.shape_branch_logits_gate:
            # Where the map is on: the per-patch term re-ranks the objects it covers, not the edges.
            term = logits.detach().float().sigmoid().to(term.dtype) * term
        return logits + term

    def _add_branch_terms(self, out: dict[str, Tensor], logits: Tensor, grid: Tensor, emb: Tensor, words: Tensor,
                          text_mask: Tensor) -> Tensor:
        """The maps ``(B, 1+N, h, w)`` plus what reads the shape branch's grid ``(B, w, g, g)`` directly: its
        logits (``head.shape_branch_logits``, :meth:`_add_branch_logits`) and the shape match's term
        (``head.shape_match``), from the embedded text tokens ``words`` ``(B, L, d)``; the shape match's
        classifiers' logits go into ``out`` (``shape_word_logits``, ``patch_shape_logits``) for their losses."""
        if self.cfg.head.shape_branch_logits:
            logits = self._add_branch_logits(logits, grid, emb)  # (B, 1+N, h, w)
        if self.shape_match is None:
            return logits
        out["shape_word_logits"] = self.shape_match.word_logits(words, text_mask)  # (B, 1 + S)
        out["patch_shape_logits"] = self.shape_match.patch_logits(grid)  # (B, n, S)
        term = self.shape_match(out["shape_word_logits"], out["patch_shape_logits"], grid.shape[-2:],
                                logits.shape[-2:])  # (B, 1, h, w)
        return logits + term.to(logits.dtype)  # the same term onto every expression's map

    def forward(
        self, image: Tensor, text_ids: Tensor, text_mask: Tensor, *, return_attention: bool = False
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        lat = cfg.latent
        text_mask = text_mask.bool()
        xv, xt = self.beit3.embed(image, text_ids)  # (B, 1+n, d), (B, L, d)
        words = xt  # the embedded text tokens, read by the shape match before any layer mixes them
        pixels = None
        if self.stem_tokens is not None or self.mask_refiner is not None:
            # Once for every reader: the patch tokens, F^V in the decoder, the refiner.
            pixels = self.pixel_decoder.pixels(image)  # (B, s, S/m, S/m)
        if self.stem_tokens is not None:
            xv = _add_to_patches(xv, self.stem_tokens(pixels))
        xv, grid, grid_map = self._read_shape_branch(image, xv)
        b, nv, _ = xv.shape
        text_len = xt.shape[1]
        out: dict[str, Tensor] = {}
        num_latent = 0
        if lat.enabled:
            init = self.latent_init(xt, text_mask)
            # s_V replaces the visual class token (Sec. 3.1).
            xv = torch.cat([init.subject[:, None], xv[:, 1:]], dim=1)
            xt = torch.cat([xt, init.tokens], dim=1)  # (B, L + sum(k+2), d)
            num_latent = init.tokens.shape[1]
            out["subject_index"] = init.subject_index
        attn_mask = self.beit3.attention_mask(text_mask, nv, num_latent)  # (B, 1, 1, T)

        probe_rows = None
        if return_attention:
            rows = [nv] + ([nv + text_len + i for i in lat.class_slots] if lat.enabled else [])
            probe_rows = torch.tensor(rows, device=xv.device)
        attn_sum = None

        levels: list[Tensor | None] = [None] * len(self._pyramid)
        layers = self.beit3.encoder.layers
        patch_mask = None
        for i, layer in enumerate(layers):
            xv, xt, probs = layer(xv, xt, attn_mask, probe_rows)
            if probs is not None:
                attn_sum = probs if attn_sum is None else attn_sum + probs
            if lat.enabled and i < len(layers) - 1:
                latent = xt[:, text_len:]
                if self.subject_distributor is not None:
                    latent = self.subject_distributor(latent, xv[:, 0])
                if self.concept_injectors is not None:
                    latent, patch_mask = self.concept_injectors[i](xv[:, 1:], xt[:, 0], latent)
                xt = torch.cat([xt[:, :text_len], latent], dim=1)
            if i in self._pyramid and i != len(layers) - 1:
                levels[self._pyramid[i]] = xv[:, 1:]

        ln = self.beit3.encoder.layer_norm
        xv, xt = ln.A(xv), ln.B(xt)
        last = len(layers) - 1
        if last in self._pyramid:
            levels[self._pyramid[last]] = xv[:, 1:]

        text_cls = xt[:, 0]
        if cfg.head.class_pool == "cls_mean":
            words = text_mask[:, 1:, None].to(xt.dtype)  # (B, L-1, 1): valid tokens after the class token
            text_cls = text_cls + (xt[:, 1:text_len] * words).sum(1) / words.sum(1).clamp(min=1)
        embeddings = [self.text_head(text_cls)]  # t_o
        if lat.enabled:
            z_cls = xt[:, text_len:].index_select(1, self.latent_cls_index)  # (B, N, d)
            if cfg.head.class_pool == "cls_mean":
                # Expression j is [z_cls, s, a_1..a_k] at class_slots[j]: its own tokens follow its class token.
                z_cls = z_cls + torch.stack(
                    [xt[:, text_len + start + 1: text_len + start + 2 + k].mean(1)
                     for start, k in zip(lat.class_slots, lat.lengths)], dim=1)  # (B, N, d)
            embeddings += [head(z_cls[:, j]) for j, head in enumerate(self.latent_heads)]
        emb = torch.stack(embeddings, dim=1)  # (B, 1+N, E)

        # F^V . e_j (Eq. 9); 1/sqrt(E) keeps the initial logits O(1) so the sigmoids start unsaturated.
        logits = self.pixel_decoder(levels, emb, image, pixels, grid_map) * emb.shape[-1] ** -0.5  # (B,1+N,S/m,S/m)
        if grid is not None:
            logits = self._add_branch_terms(out, logits, grid, emb, words, text_mask)  # (B, 1+N, S/m, S/m)
        if self.mask_refiner is not None:
            logits = logits + self.mask_refiner(logits, pixels)  # (B, 1+N, S/m, S/m)
        if self.candidate_position is not None:
            logits = logits + self.candidate_position(logits, emb)  # (B, 1+N, S/m, S/m)
        out["logits"] = logits
        # Each expression's map once: Eq. 9 averages them, evaluation scores them one by one.
        out["expression_prob"] = logits.float().sigmoid()  # (B, 1+N, S/m, S/m)
        out["prob"] = out["expression_prob"].mean(dim=1)  # Eq. 9
        out["text_embedding"] = emb[:, 0]
        out["latent_embeddings"] = emb[:, 1:]
        out["patch_tokens"] = xv[:, 1:]  # the last layer's, read by training-only patch classifiers
        if grid is not None:
            out["shape_grid"] = grid.flatten(2).transpose(1, 2)  # (B, w, g, g) -> (B, n, w): the shape classifier's
        if self.empty_head is not None:
            tokens = torch.cat([xv, xt], dim=1)
            out["no_target_logit"] = self.empty_head(tokens, attn_mask[:, 0, 0])
        if patch_mask is not None:
            out["patch_mask"] = patch_mask
        if attn_sum is not None:
            g = cfg.encoder.grid
            maps = attn_sum[:, :, 1:nv] / len(layers)  # (B, 1+N, n): patch columns only
            out["attention"] = maps.reshape(b, -1, g, g)
        return out

    def part_parameters(self) -> dict[str, int]:
        """Parameter counts per part: backbone, latent expressions, heads (Table 10's breakdown)."""
        counts = {part: 0 for part in PARTS}
        owner = {mod: part for part, mods in PARTS.items() for mod in mods}
        for name, p in self.named_parameters():
            counts[owner[name.split(".", 1)[0]]] += p.numel()
        return counts
