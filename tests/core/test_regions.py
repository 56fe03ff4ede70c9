"""The region rule: 8-connected components found on runs, checked against a plain flood fill."""

from __future__ import annotations

import numpy as np
import pytest

from lvg.core.regions import SPECK_FRACTION, find_regions
from tests.helpers.regions import reference_components, tight_box


@pytest.mark.parametrize("seed", range(40))
def test_regions_equal_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, 2)
    mask = rng.random((h, w)) < rng.uniform(0.05, 0.7)
    prob = rng.random((h, w)).astype(np.float32)
    got = find_regions(mask, prob, speck_fraction=0.0, max_regions=10**6)
    want = reference_components(mask)
    assert sorted(r.area for r in got) == sorted(int(c.sum()) for c in want)
    by_pixels = {c.tobytes(): c for c in want}
    for r in got:  # each region is exactly one component, with its box and mean probability
        comp = by_pixels[r.mask.tobytes()]
        assert r.box == tight_box(comp) and r.area == comp.sum()
        assert r.score == pytest.approx(float(prob[comp].mean()), rel=1e-5)
        assert r.peak == float(prob[comp].max())
    assert [r.area for r in got] == sorted((r.area for r in got), reverse=True)


def test_corners_touch_and_specks_are_dropped():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True  # the main region, 400 px
    mask[25, 25] = True  # touches it by a corner only: part of it (8-connectivity)
    mask[35:37, 35:37] = True  # 4 px, 1% of the main region: a speck
    mask[0:5, 30:35] = True  # 25 px, 6%: kept
    regions = find_regions(mask)
    assert [r.area for r in regions] == [401, 25]
    assert regions[0].box == (5, 5, 26, 26)
    assert SPECK_FRACTION == 0.05
    assert find_regions(np.zeros((3, 3), bool)) == []


@pytest.mark.parametrize("flip", [False, True])
def test_full_ties_go_to_the_first_region_in_scan_order(flip):
    """Equal area and equal mean probability (to 1e-6): the region whose first pixel comes first (top, then
    left) leads, whatever order labelling found them in, so a tie never depends on float noise."""
    mask = np.zeros((31, 15), bool)
    mask[6, 3] = mask[26, 3] = True
    mask[2:4, 9:11] = mask[20:22, 1:3] = True  # a second tied pair, in the other corner order
    if flip:
        mask = mask[:, ::-1].copy()
    prob = np.where(mask, np.float32(0.375), np.float32(0.0))
    # Bilinear upsampling leaves float noise between copies of one blob; it must not decide: one ulp more on
    # the later region of each pair is still a tie.
    later = np.argwhere(mask)[-1]
    prob[tuple(later)] = np.nextafter(np.float32(0.375), np.float32(1.0))
    regions = find_regions(mask, prob, speck_fraction=0.0)
    firsts = [tuple(np.argwhere(r.mask)[0]) for r in regions]  # (row, col) of each region's first pixel
    assert [r.area for r in regions] == [4, 4, 1, 1]
    assert firsts[:2] == sorted(firsts[:2]) and firsts[2:] == sorted(firsts[2:])


def test_full_hd_mask_with_stray_pixels():
    """A blob and stray pixels far from it, at 1920 x 1080: the box is the blob's, the strays are specks."""
    yy, xx = np.mgrid[:1080, :1920]
    blob = (yy - 500) ** 2 + (xx - 900) ** 2 < 300**2
    mask = blob.copy()
    mask[::97, 1500::89] = True
    regions = find_regions(mask)
    assert len(regions) == 1 and regions[0].box == tight_box(blob) and regions[0].area == blob.sum()
