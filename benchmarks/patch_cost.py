"""Patch-head cost per image against the patch backbone (not a test), measured in one run.

The heads run as the exported graph runs them: the per-cell head on the patch feature maps, the map postprocess
(resize, Gaussian smoothing) and the image-score reduction. Cost does not depend on trained weights, so the heads
are built with the shipped structure and random weights / a random memory bank of PatchCore's default size
(1 % of the training cells of ``--train-images`` images). Best of ``--repeats`` timings per head, batch ``--batch``,
``--threads`` torch threads (default 1: a line-side CPU core). Prints each head's ms per image, its share of the
backbone's, and its ratio to PatchCore's; ``--backbones`` also times other patch backbones (same input, same run)
against the first.

Usage::

    python benchmarks/patch_cost.py [--train-images 495] [--batch 8] [--threads 1] [--repeats 5]
    python benchmarks/patch_cost.py --backbones efficientnet-lite0,efficientnet-lite1,efficientnet-lite2
    python benchmarks/patch_cost.py --smoke     # seconds: 64 px input, tiny bank

Figures: benchmarks/RESULTS.md, "Patch variant".
"""

from __future__ import annotations

import argparse
import sys
import time


def best_ms_per_image(fn, x, repeats: int) -> float:
    import torch

    best = float("inf")
    with torch.no_grad():
        fn(x)
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t)
    return best / len(x) * 1000.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-images", type=int, default=495, help="training images the PatchCore bank is sized for")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backbones", default="efficientnet-lite0",
                   help="comma-separated patch backbones; the heads run on the first one's features")
    p.add_argument("--smoke", action="store_true", help="seconds: 64 px input, tiny bank, one repeat")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from algan.features.backbone import Preprocess, make_spec
    from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchSpec, default_patch_blocks
    from algan.model.gan.feature import AlganConfig
    from algan.model.heads.patch import PatchwiseHead, padim_head
    from algan.model.heads.vector import KnnHead
    from algan.model.nets.algan_head import fold_whitening

    torch.set_num_threads(args.threads)
    size = (64, 64) if args.smoke else (224, 224)
    repeats = 1 if args.smoke else args.repeats
    names = [b for b in args.backbones.split(",") if b]
    if args.smoke and len(names) == 1:  # the smoke size also runs the comparison of backbones
        names.append("efficientnet-lite1" if names[0] != "efficientnet-lite1" else "efficientnet-lite0")
    pspec = PatchSpec()
    trunks = {}
    for name in names:
        spec = make_spec(name, default_patch_blocks(name), "avg", size)
        trunks[name] = PatchFeatureMaps(spec, pspec).eval()
    fm, pre, post = trunks[names[0]], Preprocess(spec.mean, spec.std), MapPostprocess(pspec, size)
    images = torch.randint(0, 255, (args.batch, *size, 3), dtype=torch.uint8)
    with torch.no_grad():
        feats = fm(pre(images))
    k = int(feats.shape[1])
    gh, gw = feats.shape[-2:]
    n_bank = max(1, int(round(0.01 * args.train_images * gh * gw)))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((max(n_bank, 4 * k), k)).astype(np.float32)
    heads = {
        "ALGAN-patch (default, D [512])": AlganConfig.preset("patch"),
        "ALGAN-patch, 2 x D [512] (--ensemble 2)": AlganConfig.preset("patch", ensemble=2),
        "ALGAN-patch, D [256] (previous default)": AlganConfig.preset("patch", d_hidden=[256]),
    }
    modules = {name: PatchwiseHead(fold_whitening(cfg.build_head(k))).eval() for name, cfg in heads.items()}
    modules["PaDiM-style"] = padim_head(x)
    modules[f"PatchCore (bank {n_bank})"] = PatchwiseHead(KnnHead(x[:n_bank], 1)).eval()
    trunk_ms = {name: best_ms_per_image(lambda u, t=t: t(pre(u)), images, repeats) for name, t in trunks.items()}
    backbone_ms = trunk_ms[names[0]]
    rows = {name: best_ms_per_image(lambda f, h=h: post.reduce(post(h(f))), feats, repeats)
            for name, h in modules.items()}
    patchcore = rows[f"PatchCore (bank {n_bank})"]
    print(f"input {size[0]}x{size[1]}, {k}-d patch vectors on a {gh}x{gw} grid, batch {args.batch}, "
          f"{args.threads} thread(s), best of {repeats}")
    print(f"{'backbone ' + names[0]:<42} {backbone_ms:8.2f} ms / image")
    for name in names[1:]:
        print(f"{'backbone ' + name:<42} {trunk_ms[name]:8.2f} ms / image  {trunk_ms[name] / backbone_ms:.2f} x "
              f"{names[0]}'s")
    for name, ms in rows.items():
        print(f"{name:<42} {ms:8.3f} ms / image  {100 * ms / backbone_ms:6.1f} % of the backbone  "
              f"{ms / patchcore:.3f} x PatchCore's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
