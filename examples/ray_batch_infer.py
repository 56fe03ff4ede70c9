"""Label a folder of images with one expression on Ray Data: one Grounder per actor, boxes to Parquet.

    pip install 'latent-vg[ray]'
    python examples/ray_batch_infer.py IMAGES_DIR "the red car" --model model.onnx --out boxes/ --actors 4

On a cluster, start Ray there (``ray start``) and pass an address Ray can read (a shared file system or
``s3://``); each actor loads the model once and takes ``--threads`` CPUs.
"""

from __future__ import annotations

import argparse

import ray

from lvg.integrations.ray import infer_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", help="folder (or s3:// prefix) of images")
    ap.add_argument("text", help="the referring expression asked of every image")
    ap.add_argument("--model", default=None, help=".onnx / engine / .safetensors (default: the bundled model)")
    ap.add_argument("--out", default="boxes", help="output folder of Parquet files")
    ap.add_argument("--actors", type=int, default=2, help="actors, each with one Grounder")
    ap.add_argument("--threads", type=float, default=1, help="CPUs per actor")
    ap.add_argument("--batch", type=int, default=16, help="images per batch")
    args = ap.parse_args()

    ray.init()  # joins a running cluster when RAY_ADDRESS is set, else starts a local one
    ds = ray.data.read_images(args.images, include_paths=True, mode="RGB")
    out = infer_dataset(ds, args.model, text=args.text, batch_size=args.batch, concurrency=args.actors,
                        num_cpus=args.threads, include_mask=False)
    out.write_parquet(args.out)  # columns: path, box, has_box, score, low_confidence, ..., error
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
