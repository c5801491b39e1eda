"""Clinical finding extraction from report text: findings with negation, uncertainty and laterality.

Built on medspaCy's target matcher and ConText on a blank spaCy pipeline (no
model download). Used for the clinical-efficacy metrics of generated reports
(:func:`medmodal.evaluation.metrics.clinical_efficacy`) and by
``medmodal label-reports`` (:func:`label_reports_file`).

    from medmodal.labeling import ReportLabeler, to_binary
    labeler = ReportLabeler()                     # shipped chest X-ray vocabulary
    labeler.label("No pneumothorax. Small left effusion.")
    # {"cardiomegaly": "absent", "effusion": "positive", "pneumothorax": "negative", ..., "normal": "negative"}

Importing this package is cheap; spaCy and medspaCy load when a labeler is built.
"""

from medmodal.labeling.context_rules import (
    LATERALITY_RULES,
    PROJECT_CONTEXT_RULES,
    REMOVED_DEFAULT_RULES,
    ContextRuleError,
    ContextRuleSpec,
    load_context_rules,
)
from medmodal.labeling.labeler import (
    LABELS,
    STATUSES,
    Mention,
    ReportLabeler,
    aggregate,
    default_labeler,
    label_reports_file,
    to_binary,
)
from medmodal.labeling.vocabulary import (
    NORMAL,
    FindingSpec,
    Vocabulary,
    VocabularyError,
    available_vocabularies,
    expand_phrase,
    load_vocabulary,
    vocabulary_from_dict,
)

__all__ = [
    "LABELS",
    "LATERALITY_RULES",
    "NORMAL",
    "PROJECT_CONTEXT_RULES",
    "REMOVED_DEFAULT_RULES",
    "STATUSES",
    "ContextRuleError",
    "ContextRuleSpec",
    "FindingSpec",
    "Mention",
    "ReportLabeler",
    "Vocabulary",
    "VocabularyError",
    "aggregate",
    "available_vocabularies",
    "default_labeler",
    "expand_phrase",
    "label_reports_file",
    "load_context_rules",
    "load_vocabulary",
    "to_binary",
    "vocabulary_from_dict",
]
