"""Zero-shot classification with a pretraining run: findings scored by text prompts, no labels.

For each finding, a *positive* prompt set ("there is {synonym}.") and a *negative* one
("no {synonym}.", plus the vocabulary's wordings that assert its absence, e.g. "normal heart
size") are embedded with the pretrained text encoder; each set's embeddings are averaged
(prompt ensembling, CLIP) and renormalised. An image's score for the finding is the softmax
of its (temperature-scaled) cosine with the positive against the negative class embedding:
``p = sigmoid(scale * (cos(img, pos) - cos(img, neg)))``.

Synonyms come from the report labeler's finding vocabulary
(:mod:`medmodal.labeling.vocabulary`, chest X-ray by default); a label it does not know is
prompted with its own name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmodal.labeling.vocabulary import Vocabulary, expand_phrase, load_vocabulary
from medmodal.retrieval.embed import embed_texts
from medmodal.training.pretrain import PretrainedRun

POSITIVE_TEMPLATES = ("{}.", "there is {}.", "{} is present.")
NEGATIVE_TEMPLATES = ("no {}.", "there is no {}.", "no evidence of {}.")
MAX_SYNONYMS = 4


@dataclass
class PromptSet:
    """The prompts of one finding."""

    label: str
    positive: list[str]
    negative: list[str]


def finding_synonyms(label: str, vocabulary: Vocabulary, limit: int = MAX_SYNONYMS) -> list[str]:
    """Up to ``limit`` wordings of ``label``: the vocabulary's phrases (singular form), else the name."""
    spec = vocabulary.findings.get(label)
    if spec is None or not spec.phrases:
        return [label.replace("_", " ")]
    return list(dict.fromkeys(expand_phrase(p)[0] for p in spec.phrases))[:limit]


def build_prompts(
    labels: list[str],
    vocabulary: Vocabulary | str | None = None,
    positive_templates: tuple[str, ...] = POSITIVE_TEMPLATES,
    negative_templates: tuple[str, ...] = NEGATIVE_TEMPLATES,
) -> list[PromptSet]:
    """Positive and negative prompts per label (templates x synonyms; negatives also get the
    vocabulary's ``negative_phrases``, e.g. "normal heart size")."""
    vocab = load_vocabulary(vocabulary)
    sets = []
    for label in labels:
        synonyms = finding_synonyms(label, vocab)
        positive = [t.format(s) for t in positive_templates for s in synonyms]
        negative = [t.format(s) for t in negative_templates for s in synonyms]
        spec = vocab.findings.get(label)
        if spec is not None:
            negative += [expand_phrase(p)[0] + "." for p in spec.negative_phrases[:MAX_SYNONYMS]]
        sets.append(PromptSet(label, positive, negative))
    return sets


def class_embedding(run: PretrainedRun, prompts: list[str]) -> np.ndarray:
    """Mean of the prompts' unit embeddings, renormalised: float32 [P]."""
    mean = embed_texts(run, prompts).mean(axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


def prompt_embeddings(run: PretrainedRun, prompt_sets: list[PromptSet]) -> tuple[np.ndarray, np.ndarray]:
    """(positive [C, P], negative [C, P]) class embeddings."""
    positive = np.stack([class_embedding(run, s.positive) for s in prompt_sets])
    negative = np.stack([class_embedding(run, s.negative) for s in prompt_sets])
    return positive, negative


def zero_shot_probabilities(
    image_embeddings: np.ndarray, positive: np.ndarray, negative: np.ndarray, logit_scale: float
) -> np.ndarray:
    """Two-way softmax per finding.

    Args:
        image_embeddings: [N, P] unit norm.
        positive / negative: [C, P] unit-norm class embeddings.
        logit_scale: 1 / temperature of the run.

    Returns:
        [N, C] probability that each finding is present.
    """
    margin = logit_scale * (image_embeddings @ positive.T - image_embeddings @ negative.T)
    return 1.0 / (1.0 + np.exp(-margin))
