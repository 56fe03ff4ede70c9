"""Where a model keeps the position of a pixel: linear probes of x and y on its feature maps.

    python benchmarks/bench_position_probe.py --ckpt RUN/last.safetensors --data data/synth-heldout \
        [--sentences 96] [--out benchmarks/results] [--name NAME]

The mask is ``F^V . e_j`` (Eq. 9): one dot product per pixel between the pixel decoder's features and an
expression's embedding. To prefer "the star on the left", either the encoder has written into the left
star's features that it is the one meant, or ``F^V`` carries where each pixel is, so the embedding can
weigh it. This bench runs the model on ``--sentences`` sentences of the split (with their images), fits a
ridge regression from each feature vector to its cell's x and y (-1 .. 1) on the first half and reports
R^2 on the second half, for every pyramid level the encoder hands the decoder and for ``F^V`` at 1/8 scale
(what the folded last step reads). R^2 near 0: a linear read-out of the features cannot tell where they
are; below 0: a fit on some images does not carry to others.

The other half of the dot product is the expression's embedding ``e``. For the sentences of the split that
name a direction, a colour, a shape or a texture, it also swaps that one word ("left" <-> "right", "top" <->
"bottom"; a colour, shape or texture for the next one of the generator's list) and reports the mean cosine
similarity between the embeddings of the sentence and its swap on the same image: near 1, the embedding does
not carry that word. For a model with ``HeadConfig.candidate_positions`` it also reports, per direction word,
the mean coefficients ``(a_x, a_y)`` the input expression's embedding gives to a pixel's offset from the
centroid of what its map covers (negative ``a_x``: the left of the candidates gains). Writes
``position_probe_<name>.json`` and prints the tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from _synth_checkpoint import FV, arguments, forward, open_checkpoint, recorded_features, write

from lvg.train.synth import COLOURS, SHAPES, TEXTURES

#: One-word swaps: a direction for its opposite, a colour for another (the generator's words).
DIRECTION_SWAPS = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost",
                   "top": "bottom", "bottom": "top", "topmost": "bottommost", "bottommost": "topmost",
                   "above": "below", "below": "above", "under": "above"}
RIDGE = 1.0  # on standardised features: only keeps the solve stable, too weak to change R^2 visibly


def probe_r2(features: np.ndarray, target: np.ndarray) -> float:
    """Held-out R^2 of a ridge regression ``features (N, d) -> target (N,)``: fitted on the first half of the
    rows, scored on the second (rows are ordered by sentence, so the halves are mostly different images)."""
    half = len(features) // 2
    mu, sd = features[:half].mean(0), features[:half].std(0) + 1e-6
    a = np.c_[(features - mu) / sd, np.ones(len(features))]  # (N, d + 1) standardised, with a bias column
    coef = np.linalg.solve(a[:half].T @ a[:half] + RIDGE * np.eye(a.shape[1]), a[:half].T @ target[:half])
    resid = a[half:] @ coef - target[half:]
    return float(1.0 - (resid**2).mean() / target[half:].var())


def grid_targets(n_maps: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y (-1 .. 1, cell centres) of every cell of ``n_maps`` row-major ``side x side`` maps, in order."""
    u = (np.arange(side) + 0.5) / side * 2 - 1
    y, x = np.meshgrid(u, u, indexing="ij")  # (side, side)
    return np.tile(x.ravel(), n_maps), np.tile(y.ravel(), n_maps)


def cycle_swaps(words: list[str]) -> dict[str, str]:
    """Each word for the next one of ``words`` (the last for the first)."""
    return {w: words[(k + 1) % len(words)] for k, w in enumerate(words)}


def swap_word(text: str, swaps: dict[str, str]) -> str | None:
    """``text`` with its first word found in ``swaps`` replaced, or ``None`` when it has none."""
    words = text.split()
    for i, w in enumerate(words):
        if w in swaps:
            return " ".join([*words[:i], swaps[w], *words[i + 1:]])
    return None


def embedding_similarity(model: Any, dataset: Any, n: int, swaps: dict[str, str]) -> tuple[float, int]:
    """Mean cosine similarity of the expression embedding before and after one swapped word, over the first
    ``n`` sentences that have such a word, each on its own image; and how many there were."""
    tok, max_len = dataset.tokenizer, model.cfg.preprocess.max_text_len
    sims: list[float] = []
    for i in range(len(dataset)):
        if len(sims) >= n:
            break
        text = dataset.plan(i)[1]
        other = swap_word(text, swaps)
        if other is None:
            continue
        image = dataset[i]["image"]  # the same image under both sentences
        pair = [{"image": image, "text_ids": ids, "text_mask": mask}
                for ids, mask, _ in (tok.encode_checked(t, max_len) for t in (text, other))]
        e = forward(model, pair)["text_embedding"]  # (2, E)
        sims.append(float(torch.nn.functional.cosine_similarity(e[0], e[1], dim=0)))
    return (float(np.mean(sims)) if sims else float("nan")), len(sims)


def candidate_coefficients(model: Any, dataset: Any, n: int, batch_size: int) -> dict[str, dict[str, float]]:
    """Mean ``(a_x, a_y)`` of the input expression per first direction word, over the first ``n`` sentences
    that have one (``HeadConfig.candidate_positions``); empty for a model without it."""
    box = model.candidate_position
    if box is None:
        return {}
    order: list[tuple[int, str]] = []  # (sentence, its first direction word)
    for i in range(len(dataset)):
        if len(order) >= n:
            break
        word = next((w for w in dataset.plan(i)[1].split() if w in DIRECTION_SWAPS), None)
        if word is not None:
            order.append((i, word))
    rows: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        emb = forward(model, [dataset[i] for i, _ in chunk])["text_embedding"]  # (b, E)
        with torch.no_grad():
            a = box.coefficients(emb.float()).numpy()  # (b, 2)
        for (_, word), coef in zip(chunk, a):
            rows.setdefault(word, []).append(coef)
    return {w: {"a_x": float(np.mean([c[0] for c in cs])), "a_y": float(np.mean([c[1] for c in cs])),
                "sentences": len(cs)} for w, cs in sorted(rows.items())}


def run(ckpt: Path, data: Path, split: str, sentences: int, batch_size: int) -> dict[str, Any]:
    opened = open_checkpoint(ckpt, data, split)
    model, dataset = opened.model, opened.dataset
    n = min(sentences, len(dataset))
    with recorded_features(model) as captured:
        for start in range(0, n, batch_size):
            forward(model, [dataset[i] for i in range(start, min(n, start + batch_size))])
    # closed: the embedding passes below record nothing
    captured[FV] = [m.flatten(2).transpose(1, 2) for m in captured[FV]]  # (B, c, h, w) -> (B, hw, c)
    rows = {}
    for name, parts in captured.items():
        feats = torch.cat(parts).float()  # (N, cells, d)
        side = int(round(feats.shape[1] ** 0.5))
        x, y = grid_targets(feats.shape[0], side)
        flat = feats.reshape(-1, feats.shape[2]).numpy()
        rows[name] = {"dims": int(feats.shape[2]), "side": side, "r2_x": probe_r2(flat, x), "r2_y": probe_r2(flat, y)}
    similarity = {}
    for name, swaps in (("direction", DIRECTION_SWAPS), ("colour", cycle_swaps(list(COLOURS))),
                        ("shape", cycle_swaps(list(SHAPES))), ("texture", cycle_swaps(list(TEXTURES)))):
        mean, count = embedding_similarity(model, dataset, n, swaps)
        similarity[name] = {"cosine": mean, "sentences": count}
    return {"variant": model.cfg.name, "sentences": n, "probes": rows, "embedding_similarity": similarity,
            "candidate_coefficients": candidate_coefficients(model, dataset, 4 * n, batch_size)}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--sentences", type=int, default=96, help="Sentences to run (each with its image).")
    args = parser.parse_args()
    result = run(args.ckpt, args.data, args.split, args.sentences, args.batch_size)
    print(f"{result['variant']} on {args.data} ({args.split}, {result['sentences']} sentences): held-out R^2 of a "
          "linear probe")
    print(f"{'features':<26} {'dims':>5} {'grid':>5} {'x':>7} {'y':>7}")
    for name, row in result["probes"].items():
        print(f"{name:<26} {row['dims']:>5} {row['side']:>5} {row['r2_x']:>7.3f} {row['r2_y']:>7.3f}")
    print(f"\n{'one word swapped':<18} {'sentences':>9} {'cos(e, e_swapped)':>18}")
    for name, row in result["embedding_similarity"].items():
        print(f"{name:<18} {row['sentences']:>9} {row['cosine']:>18.3f}")
    if result["candidate_coefficients"]:
        print(f"\n{'direction word':<18} {'sentences':>9} {'a_x':>7} {'a_y':>7}")
        for word, row in result["candidate_coefficients"].items():
            print(f"{word:<18} {row['sentences']:>9} {row['a_x']:>7.2f} {row['a_y']:>7.2f}")
    write(result, args, "position_probe")


if __name__ == "__main__":
    main()
