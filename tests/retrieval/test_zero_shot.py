"""Prompt construction and prompt scoring of zero-shot classification."""

from __future__ import annotations

import numpy as np

from medmodal.retrieval.zero_shot import build_prompts, zero_shot_probabilities


def test_prompts_use_vocabulary_synonyms_and_absence_wordings():
    cardio, unknown = build_prompts(["cardiomegaly", "tiny_lesion"])
    assert "there is cardiomegaly." in cardio.positive
    assert "there is enlarged cardiac silhouette." in cardio.positive
    assert "no cardiomegaly." in cardio.negative
    assert "normal heart." in cardio.negative  # the vocabulary's negative phrase
    assert unknown.positive[0] == "tiny lesion." and "no tiny lesion." in unknown.negative


def test_probability_follows_the_nearer_prompt():
    positive = np.array([[1.0, 0.0], [0.0, 1.0]])
    negative = np.array([[0.0, 1.0], [1.0, 0.0]])
    images = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    p = zero_shot_probabilities(images, positive, negative, logit_scale=10.0)
    assert p[0, 0] > 0.99 and p[0, 1] < 0.01
    assert p[1, 1] > 0.99 and p[1, 0] < 0.01
    np.testing.assert_allclose(p[2], [0.5, 0.5])  # equidistant
