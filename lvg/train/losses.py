"""Training losses (paper Sec. 3.3, SPEC 3.6): contrastive alignment of the latent expressions, BCE + Dice
on the averaged probability map ``p_hat`` (Eq. 9), and the GRES no-target loss (Appendix B).

Conventions shared by every function here:

- ``text_emb`` ``(B, E)`` is ``t_o`` (the input expression's class-token embedding); ``latent_emb``
  ``(B, N, E)`` holds ``z_o^i``. Similarities are cosines.
- Positives of sample ``b``: its own ``N`` latent expressions. Negatives: the latent class-token
  embeddings ``z_o^j`` of every OTHER sample in the (per-process) batch, ``(B - 1) * N`` of them (Eq. 8's
  "class tokens of latent expressions from other batches"). Under DDP the negatives are the local batch's.
- The contrastive losses are averaged over the ``N`` expressions and the ``B`` samples. With ``B == 1``
  (no negatives) or ``N == 0`` (no latent expressions) they are skipped: an exact zero.
- Losses are computed in float32 whatever the autocast dtype (``p_hat`` near 0/1 loses all precision in
  half precision, and ``log`` of it explodes).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ContrastiveKind = Literal["pos_margin", "infonce", "triplet", "arcface"]

#: ``p_hat`` is clamped to ``[EPS, 1 - EPS]`` before the logarithms of the BCE.
EPS = 1e-6


def _similarities(text_emb: Tensor, latent_emb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cosines of each anchor ``t_o^b`` with its positives and with every latent embedding in the batch.

    Returns ``(pos, neg, neg_valid)``: ``pos`` ``(B, N)`` = ``cos(t_o^b, z_o^{b,i})``; ``neg`` ``(B, B*N)`` =
    ``cos(t_o^b, z_o^{k,j})`` for all ``(k, j)`` flattened k-major; ``neg_valid`` ``(B, B*N)`` bool, False
    where ``k == b`` (a sample's own expressions are its positives, never its negatives).
    """
    b, n, _ = latent_emb.shape
    t = F.normalize(text_emb.float(), dim=-1)  # (B, E)
    z = F.normalize(latent_emb.float(), dim=-1)  # (B, N, E)
    pos = torch.einsum("be,bne->bn", t, z)  # (B, N)
    neg = t @ z.reshape(b * n, -1).T  # (B, N, E) -> (B*N, E); (B, B*N)
    owner = torch.arange(b, device=z.device).repeat_interleave(n)  # (B*N,) sample of each column
    neg_valid = owner[None, :] != torch.arange(b, device=z.device)[:, None]  # (B, B*N)
    return pos, neg, neg_valid


def _masked_logsumexp(x: Tensor, valid: Tensor) -> Tensor:
    """``logsumexp`` over the last dim of ``x`` restricted to ``valid`` entries: ``(B, M) -> (B,)``."""
    return torch.logsumexp(x.masked_fill(~valid, float("-inf")), dim=-1)


def contrastive_loss(
    text_emb: Tensor,
    latent_emb: Tensor,
    *,
    kind: ContrastiveKind = "pos_margin",
    gamma: float = 0.2,
    tau: float = 0.1,
) -> Tensor:
    """Align the latent expressions with the input expression (scalar, float32).

    Args:
        text_emb: ``(B, E)`` ``t_o``.
        latent_emb: ``(B, N, E)`` ``z_o^i``.
        kind:
            - ``"pos_margin"`` (Eq. 8): ``-log( exp(min(1, gamma + s_i) / tau) / sum_{k in N_i} exp(s_k / tau) )``.
              decided: the denominator holds ONLY the negatives, exactly as Eq. 8 is written (a decoupled
              form: the positive is not in its own denominator). Together with ``min(1, .)`` this gives the
              positive no gradient once ``s_i >= 1 - gamma``: the positives may keep a margin of variation
              instead of collapsing onto ``t_o``. The loss may be negative; it is bounded below.
            - ``"infonce"`` (Table 6, [38]): ``-log( exp(s_i/tau) / (exp(s_i/tau) + sum_k exp(s_k/tau)) )``, no
              margin, positive included in the denominator.
            - ``"triplet"`` (Table 6, [41]): ``mean_k max(0, gamma - s_i + s_k)`` (cosine similarities, the
              margin is ``gamma``), averaged over all negatives.
            - ``"arcface"`` (Table 6, [9]): InfoNCE with an additive angular margin on the positive:
              ``cos(arccos(s_i) + gamma)`` replaces ``s_i`` in numerator and denominator.
        gamma: the margin. tau: the temperature (not used by ``"triplet"``).

    Returns:
        The loss averaged over the ``N`` expressions and ``B`` samples; exactly 0 when ``B < 2`` or ``N == 0``.
    """
    if text_emb.ndim != 2 or latent_emb.ndim != 3 or latent_emb.shape[0] != text_emb.shape[0]:
        raise ValueError(f"expected text (B, E) and latent (B, N, E), got {tuple(text_emb.shape)}, "
                         f"{tuple(latent_emb.shape)}")
    b, n, _ = latent_emb.shape
    if b < 2 or n == 0:
        return torch.zeros((), device=text_emb.device, dtype=torch.float32)
    pos, neg, valid = _similarities(text_emb, latent_emb)
    if kind == "pos_margin":
        numerator = torch.clamp(gamma + pos, max=1.0) / tau  # (B, N)
        denominator = _masked_logsumexp(neg / tau, valid)  # (B,): the same negatives for every i of a sample
        return (denominator[:, None] - numerator).mean()
    if kind == "triplet":
        hinge = F.relu(gamma - pos[:, :, None] + neg[:, None, :])  # (B, N, B*N)
        hinge = hinge * valid[:, None, :]
        return (hinge.sum(-1) / valid.sum(-1)[:, None]).mean()
    if kind == "infonce":
        positive = pos
    elif kind == "arcface":
        theta = torch.acos(pos.clamp(-1 + 1e-6, 1 - 1e-6))
        positive = torch.cos(theta + gamma)
    else:
        raise ValueError(f"unknown contrastive kind {kind!r}")
    # logsumexp over {positive_i} U negatives, per (b, i): (B, N, 1 + B*N)
    neg_b = neg.masked_fill(~valid, float("-inf"))[:, None, :].expand(b, n, -1)
    logits = torch.cat([positive[:, :, None], neg_b], dim=-1) / tau
    return (torch.logsumexp(logits, dim=-1) - positive / tau).mean()


def _sample_mean(per_sample: Tensor, weight: Tensor | None) -> Tensor:
    """``(B,)`` -> scalar: the plain mean, or the ``weight``-weighted mean (0 when every weight is 0)."""
    if weight is None:
        return per_sample.mean()
    w = weight.float()
    return (w * per_sample).sum() / w.sum().clamp(min=1e-12)


def bce_loss(prob: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of probabilities ``prob`` ``(B, H, W)`` against a soft ``target`` in [0, 1],
    averaged over all pixels; float32, ``prob`` clamped to ``[EPS, 1 - EPS]``. ``weight`` ``(B,)``, when
    given, weighs each sample's pixel mean (a weighted mean over the batch)."""
    p = prob.float().clamp(EPS, 1 - EPS)
    t = target.float()
    per_pixel = -(t * torch.log(p) + (1 - t) * torch.log1p(-p))
    return _sample_mean(per_pixel.flatten(1).mean(-1), weight)  # (B, H, W) -> (B,) -> ()


def dice_loss(prob: Tensor, target: Tensor, smooth: float = 1.0, weight: Tensor | None = None) -> Tensor:
    """``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)`` per sample, averaged over the batch
    (weighted by ``weight`` ``(B,)`` when given).

    ``smooth = 1`` keeps an empty target (GRES no-target) well defined: the loss is then
    ``1 - 1 / (sum(p) + 1)``, which pushes the whole map to 0.
    """
    p = prob.float().flatten(1)  # (B, H, W) -> (B, H*W)
    t = target.float().flatten(1)
    inter = (p * t).sum(-1)
    return _sample_mean(1 - (2 * inter + smooth) / (p.sum(-1) + t.sum(-1) + smooth), weight)


def no_target_loss(logit: Tensor, no_target: Tensor) -> Tensor:
    """GRES ``L_nt``: binary cross-entropy with logits, target 1 = "no object is referred"."""
    return F.binary_cross_entropy_with_logits(logit.float(), no_target.float())


def grounding_loss(
    outputs: dict[str, Tensor],
    target: Tensor,
    no_target: Tensor | None = None,
    *,
    bce: float = 2.0,
    dice: float = 0.5,
    contrastive: float = 1.0,
    contrastive_kind: ContrastiveKind = "pos_margin",
    gamma: float = 0.2,
    tau: float = 0.1,
    no_target_weight: float = 0.5,
    no_target_mask_weight: float = 1.0,
) -> dict[str, Tensor]:
    """The full objective ``L = w_c L_cont + w_bce BCE(p_hat, p) + w_dice Dice(p_hat, p) (+ w_nt L_nt)``.

    Args:
        outputs: the model's forward dict (``prob`` ``(B, H, W)``, ``text_embedding``,
            ``latent_embeddings``, and ``no_target_logit`` ``(B,)`` for GRES variants).
        target: ``(B, H, W)`` soft ground-truth mask at the map's resolution.
        no_target: ``(B,)`` float, 1 for GRES samples that refer to nothing. Their segmentation target is
            forced to the empty mask. Used for ``L_nt`` only when the model has a no-target head.
        no_target_mask_weight: the weight of a no-target sample's BCE and Dice against 1 for a sample with a
            target (a weighted mean over the batch). 0 leaves "nothing is referred" to the no-target head
            alone: the mask then always answers "where", the head "whether".

    Returns:
        ``{"contrastive", "bce", "dice", ["no_target"], "total"}``: unweighted float32 scalars, and
        ``total`` the weighted sum (the one to back-propagate).
    """
    prob = outputs["prob"]
    if target.shape != prob.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match prob {tuple(prob.shape)}")
    target = target.float()
    weight = None
    if no_target is not None:
        target = target * (1 - no_target.float())[:, None, None]  # (B,) -> (B, 1, 1): empty mask for no-target
        if no_target_mask_weight != 1.0:
            weight = 1 - (1 - no_target_mask_weight) * no_target.float()  # (B,): 1 with a target, w without
    parts: dict[str, Tensor] = {
        "contrastive": contrastive_loss(
            outputs["text_embedding"], outputs["latent_embeddings"], kind=contrastive_kind, gamma=gamma, tau=tau
        ),
        "bce": bce_loss(prob, target, weight),
        "dice": dice_loss(prob, target, weight=weight),
    }
    total = contrastive * parts["contrastive"] + bce * parts["bce"] + dice * parts["dice"]
    if "no_target_logit" in outputs and no_target is not None:
        parts["no_target"] = no_target_loss(outputs["no_target_logit"], no_target)
        total = total + no_target_weight * parts["no_target"]
    parts["total"] = total
    return parts


def object_pick_loss(logits: Tensor, objects: Tensor, target_object: Tensor) -> Tensor:
    """Which object each expression's map picks, scored as a classification over the image's objects.

    Args:
        logits: ``(B, J, h, w)`` one map per expression (the model's ``logits``).
        objects: ``(B, h, w)`` integer: 0 on the background, ``k >= 1`` on the pixels of object ``k``.
        target_object: ``(B,)`` int64: the referred object's ``k``, or a negative value for a sample that
            does not take part (no target, several targets).

    Returns:
        The mean over taking-part samples and their ``J`` maps of the cross-entropy of the objects' mean
        logits (each object's pixels averaged; absent indices and the background are no candidates); 0 (with
        a graph) when no sample takes part.
    """
    b, j, h, w = logits.shape
    if objects.shape != (b, h, w) or target_object.shape != (b,):
        raise ValueError(f"objects {tuple(objects.shape)} and target_object {tuple(target_object.shape)} do "
                         f"not fit logits {tuple(logits.shape)}")
    ids = objects.long().flatten(1)  # (B, h, w) -> (B, h*w)
    k = int(ids.max()) + 1 if ids.numel() else 1
    onehot = F.one_hot(ids, max(k, 2)).float()  # (B, h*w, K)
    count = onehot.sum(1)  # (B, K) pixels per object
    pooled = torch.einsum("bjp,bpk->bjk", logits.float().flatten(2), onehot) / count.clamp(min=1)[:, None]  # (B,J,K)
    candidate = count > 0
    candidate[:, 0] = False  # the background is not an object
    pooled = pooled.masked_fill(~candidate[:, None], float("-inf"))
    t = target_object.long()
    takes_part = (t > 0) & (t < pooled.shape[-1])
    takes_part &= candidate.gather(1, t.clamp(0, pooled.shape[-1] - 1)[:, None])[:, 0]  # a target with pixels
    if not bool(takes_part.any()):
        return logits.float().sum() * 0.0
    chosen = pooled[takes_part]  # (b', J, K)
    return F.cross_entropy(chosen.reshape(-1, chosen.shape[-1]), t[takes_part].repeat_interleave(j))


__all__ = ["EPS", "bce_loss", "contrastive_loss", "dice_loss", "grounding_loss", "no_target_loss",
           "object_pick_loss"]
