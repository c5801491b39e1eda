"""mAP@0.5 of image resamples from one COCOeval matching equals pycocotools re-run on the resample."""

import numpy as np
import pytest

from medmodal.evaluation.metrics.localization import detection_metrics, map_50_of_images, matches_at_50

LABELS = ["a", "b", "c"]


def _random_split(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    truth, dets = [], []
    for _ in range(n):
        t, d = [], []
        for c in range(len(LABELS)):
            if rng.random() < 0.4:
                x, y = rng.random(2) * 0.7
                w, h = 0.05 + rng.random(2) * 0.2
                t.append((c, [x, y, x + w, y + h]))
                for _ in range(rng.integers(0, 3)):  # near the true box: hits and misses
                    d.append(
                        (
                            c,
                            list(np.array([x, y, x + w, y + h]) + rng.normal(0, 0.03, 4)),
                            float(rng.random()),
                        )
                    )
            if rng.random() < 0.5:  # a stray box
                x, y = rng.random(2) * 0.7
                d.append((c, [x, y, x + 0.1, y + 0.1], float(rng.random() * 0.6)))
        truth.append(t)
        dets.append(d)
    return dets, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_resampled_map_matches_pycocotools(seed):
    dets, truth = _random_split(seed)
    matches = matches_at_50(dets, truth, len(LABELS))
    full = detection_metrics(dets, truth, LABELS)["map_50"]
    assert map_50_of_images(matches, range(len(truth))) == pytest.approx(full, abs=1e-9)
    idx = np.random.default_rng(seed + 10).choice(len(truth), len(truth))  # with repeats
    again = detection_metrics([dets[i] for i in idx], [truth[i] for i in idx], LABELS)["map_50"]
    assert map_50_of_images(matches, idx) == pytest.approx(again, abs=1e-9)


def test_no_detection_gives_zero_and_no_box_gives_none():
    truth = [[(0, [0.1, 0.1, 0.2, 0.2])], []]
    assert map_50_of_images(matches_at_50([[], []], truth, 1), [0, 1]) == 0.0
    assert map_50_of_images(matches_at_50([[], []], truth, 1), [1]) is None
