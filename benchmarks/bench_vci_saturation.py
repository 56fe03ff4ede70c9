"""How saturated the visual concept injector's softmaxes are in a checkpoint, per injector.

    python benchmarks/bench_vci_saturation.py --ckpt RUN/last.safetensors --data data/synth-heldout \
        [--sentences 48] [--out benchmarks/results] [--name NAME]

The VCI (paper Eq. 4-6) routes visual concepts into the latent expressions' attribute tokens through two
softmaxes over dot products of encoder tokens. This bench runs ``--sentences`` sentences of the split,
takes each injector's inputs (the patch tokens, the text class token, the latent tokens, after the
injector's own norms with ``vci_norm``) and recomputes
both softmaxes in fp32 with the kernels' references:

- ``concept max``: concept attention (Eq. 5), the largest weight of a concept over the selected patches,
  averaged over concepts and sentences; ``selected`` is the mean number of selected patches (a uniform
  softmax has max ``1 / selected``).
- ``attribute max``: attribute attention (Eq. 6), the largest weight of a concept over the attribute tokens
  (uniform: ``1 / attributes``; 1.0: a hard assignment, whose softmax passes no gradient to its logits, so
  which concept feeds which attribute no longer learns).
- the mean norms of the tokens the dot products read: patches, attribute tokens and visual concept tokens.
  The logits scale with their product over ``sqrt(d)``.

Writes ``vci_saturation_<name>.json`` and prints a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from _synth_checkpoint import arguments, forward, open_checkpoint, write

from lvg.kernels.patch_select import patch_select_reference


def saturation(patches: torch.Tensor, t_cls: torch.Tensor, latent: torch.Tensor, injector: Any) -> dict[str, Any]:
    """One injector's softmax statistics for inputs ``patches (B, n, d)``, ``t_cls (B, d)``, ``latent (B, m, d)``,
    each summed over the batch. The softmaxes are those of ``lvg.kernels``' concept and attribute attention
    references, written out here because the references return only their outputs."""
    patches, attrs = injector.vci_inputs(patches.float(), latent.float())  # fp32 in, fp32 out
    t_cls = t_cls.float()
    scale = patches.shape[-1] ** -0.5
    _, mask = patch_select_reference(patches, t_cls, rule=injector.rule, topk=injector.topk)  # (B, n)
    concepts = injector.concept_tokens().float()  # (Nc, d)
    logits = torch.einsum("cd,bnd->bcn", concepts, patches) * scale  # (B, Nc, n)
    weights = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)
    concepts_v = torch.einsum("bcn,bnd->bcd", weights, patches)  # (B, Nc, d): C_V of Eq. 5
    routing = (torch.einsum("bad,bcd->bac", attrs, concepts_v) * scale).softmax(dim=1)  # over attributes
    return {
        "concept_max": float(weights.amax(dim=-1).mean(dim=1).sum()),
        "selected": float(mask.sum(dim=1).float().sum()),
        "attribute_max": float(routing.amax(dim=1).mean(dim=1).sum()),
        "norm_patches": float(patches.norm(dim=-1).mean(dim=1).sum()),
        "norm_attributes": float(attrs.norm(dim=-1).mean(dim=1).sum()),
        "norm_concepts_v": float(concepts_v.norm(dim=-1).mean(dim=1).sum()),
    }


def run(ckpt: Path, data: Path, split: str, sentences: int, batch_size: int) -> dict[str, Any]:
    opened = open_checkpoint(ckpt, data, split)
    model, dataset = opened.model, opened.dataset
    if model.concept_injectors is None:
        raise SystemExit(f"error: {ckpt} is {model.cfg.name}, which has no visual concept injector")
    captured: dict[int, list[tuple[torch.Tensor, ...]]] = {i: [] for i in range(len(model.concept_injectors))}
    # Each injector's inputs as the forward pass hands them over: (patches, t_cls, latent).
    hooks = [inj.register_forward_pre_hook(lambda mod, args, i=i: captured[i].append(tuple(a.detach() for a in args)))
             for i, inj in enumerate(model.concept_injectors)]
    n = min(sentences, len(dataset))
    for start in range(0, n, batch_size):
        forward(model, [dataset[i] for i in range(start, min(start + batch_size, n))])
    for hook in hooks:
        hook.remove()
    rows = {}
    for i, injector in enumerate(model.concept_injectors):
        # The injector's own norms and gain are parameters: no autograd graph for statistics.
        with torch.inference_mode():
            batches = [saturation(*args, injector) for args in captured[i]]
        rows[f"injector {i}"] = {**{k: sum(b[k] for b in batches) / n for k in batches[0]},
                                 "attributes": len(injector.attr_index)}
    return {"variant": model.cfg.name, "sentences": n, "injectors": rows}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--sentences", type=int, default=48, help="Sentences to run (each with its image).")
    args = parser.parse_args()
    result = run(args.ckpt, args.data, args.split, args.sentences, args.batch_size)
    print(f"{result['variant']} on {args.data} ({args.split}, {result['sentences']} sentences): VCI softmaxes")
    print(f"{'':<12} {'concept max':>11} {'selected':>9} {'attribute max':>14} {'attributes':>11}"
          f" {'|patch|':>9} {'|attribute|':>12} {'|C_V|':>9}")
    for name, row in result["injectors"].items():
        print(f"{name:<12} {row['concept_max']:>11.3f} {row['selected']:>9.1f} {row['attribute_max']:>14.3f}"
              f" {row['attributes']:>11} {row['norm_patches']:>9.1f} {row['norm_attributes']:>12.1f}"
              f" {row['norm_concepts_v']:>9.1f}")
    write(result, args, "vci_saturation")


if __name__ == "__main__":
    main()
