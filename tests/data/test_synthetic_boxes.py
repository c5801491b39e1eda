"""Boxes of the synthetic generator: one per separately annotated part of a finding."""

from __future__ import annotations

import numpy as np
import pytest

from medmodal.data.synthetic import LABELS, default_sites, render_study, sample_cohort
from medmodal.data.synthetic.render import bounding_box


@pytest.fixture(scope="module")
def renderings():
    studies = sample_cohort(400, seed=3, sites=default_sites(3))
    return [(study, render_study(study, image_size=64)) for study in studies if study.findings]


def test_each_box_bounds_pixels_of_its_own_finding(renderings):
    for study, rendering in renderings:
        for label, boxes in rendering.boxes.items():
            assert boxes, (study.id, label)
            own = rendering.layers[label].extent
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
                assert own[y0:y1, x0:x1].any(), (study.id, label)
            # the parts together cover the finding's whole extent
            x0, y0, x1, y1 = bounding_box(own)
            assert min(b[0] for b in boxes) == x0 and min(b[1] for b in boxes) == y0
            assert max(b[2] for b in boxes) == x1 and max(b[3] for b in boxes) == y1


def test_a_bilateral_effusion_gets_one_box_per_hemithorax(renderings):
    bilateral = [
        (study, rendering)
        for study, rendering in renderings
        if (f := study.finding("effusion")) is not None and f.side == "bilateral"
    ]
    assert len(bilateral) >= 3
    for study, rendering in bilateral:
        boxes = rendering.boxes["effusion"]
        assert len(boxes) == 2, study.id
        (left_box, right_box) = sorted(boxes)
        assert left_box[2] <= right_box[0], f"{study.id}: the two sides' boxes overlap ({boxes})"
        assert all(x1 - x0 < 32 for x0, _, x1, _ in boxes)  # neither spans the mediastinum


def test_one_sided_findings_keep_one_box(renderings):
    for study, rendering in renderings:
        for label, boxes in rendering.boxes.items():
            finding = study.finding(label)
            if finding is not None and finding.side != "bilateral":
                assert len(boxes) == 1, (study.id, label)
    assert set(rendering.boxes) <= set(LABELS)


def test_the_parts_of_a_finding_are_its_extent(renderings):
    """The parts split the ground-truth pixels (the label map's); they add or drop none."""
    for study, rendering in renderings:
        for label, layer in rendering.layers.items():
            assert np.array_equal(np.logical_or.reduce(layer.parts), layer.extent), (study.id, label)
