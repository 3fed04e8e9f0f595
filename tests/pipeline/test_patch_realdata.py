"""The patch variant on real data: PatchCore, PaDiM and ALGAN-patch on an MTD subset, image and pixel AUROC.

Skipped when ../shared/data (or ALGAN_DATA_DIR) has no MTD. Subset sizes keep it under a minute on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
SIZE = (224, 224)


@pytest.fixture(scope="module")
def mtd_subset(data_dir):
    from algan.data.datasets import load_dataset

    root = data_dir / "mtd"
    if not (root / "MT_Free").is_dir():
        pytest.skip(f"MTD data not found at {root} (set ALGAN_DATA_DIR to the folder holding mtd/)")
    ds = load_dataset(root, "mtd")
    rng = np.random.default_rng(0)
    normal = [s for s in ds.test if s.label == 0]
    defect = [s for s in ds.test if s.label == 1]
    test = [normal[i] for i in rng.choice(len(normal), 60, replace=False)]
    test += [defect[i] for i in rng.choice(len(defect), 60, replace=False)]
    train = [ds.train[i] for i in sorted(rng.choice(len(ds.train), 160, replace=False).tolist())]
    return ds, train, test


def test_patch_heads_on_mtd_subset(mtd_subset):
    from algan.features.backbone import Preprocess, make_spec
    from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchSpec, default_patch_blocks
    from algan.model.evaluation.image_eval import auroc
    from algan.model.evaluation.pixel_eval import load_masks, metrics_from_maps
    from algan.model.fit import FitSettings, extract_patches, fit_patch_head
    from algan.runtime.preprocess import load_batch

    ds, train, test = mtd_subset
    spec = make_spec("efficientnet-lite0", default_patch_blocks("efficientnet-lite0"), "avg", SIZE)
    pspec = PatchSpec()
    fm, pre, post = PatchFeatureMaps(spec, pspec), Preprocess(spec.mean, spec.std), MapPostprocess(pspec, SIZE)
    x = extract_patches(pre, fm, train, SIZE, pspec.patches_per_image, 0, 32, None)
    masks = load_masks(test, SIZE)
    y = np.array([s.label for s in test])
    with torch.no_grad():
        feats = torch.cat([fm(pre(torch.from_numpy(load_batch([s.path for s in test[i : i + 32]], SIZE))))
                           for i in range(0, len(test), 32)])
    results = {}
    for head_name in ("patchcore", "padim", "algan"):
        head, *_ = fit_patch_head(FitSettings(head=head_name, variant="patch"), x, len(train) * 784, False)
        with torch.no_grad():
            maps = post(head.eval()(feats))
        m = metrics_from_maps(maps.numpy(), masks)
        results[head_name] = (auroc(y, post.reduce(maps).numpy()), m["pixel_auroc"], m["aupro"])
    print(results)
    # measured on this subset (160 train, 60 + 60 test): image / pixel AUROC / AUPRO PatchCore 0.909 / 0.838 / 0.723,
    # PaDiM 0.869 / 0.812 / 0.656, ALGAN-patch (default preset) 0.888 / 0.811 / 0.529
    image, pixel, pro = results["patchcore"]
    assert image > 0.85 and pixel > 0.8 and pro > 0.3, results
    assert results["padim"][1] > 0.7, results
    assert results["algan"][0] > 0.83 and results["algan"][1] > 0.75, results
