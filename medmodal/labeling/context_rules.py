"""ConText modifier rules of the report labeler: the project's rule data and the laterality rules.

The rules medmodal adds to medspaCy's defaults (and the defaults it drops) are data, kept in
``context_rules.yaml`` next to this module; :func:`load_context_rules` validates that file (or
another one) and names the bad rule and field. Laterality is not part of medspaCy: its rules,
with our own LEFT / RIGHT / BILATERAL categories, are generated here from the side words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medmodal.config import validation_report
from medmodal.labeling.vocabulary import VocabularyError

NEGATED = "NEGATED_EXISTENCE"
POSSIBLE = "POSSIBLE_EXISTENCE"
# Our category for high-likelihood hedges ("probable", "likely", "most suggestive of", "favored"),
# which medspaCy folds into POSSIBLE_EXISTENCE; see ReportLabeler(probable_as=...).
PROBABLE = "PROBABLE_EXISTENCE"
HYPOTHETICAL = "HYPOTHETICAL"
LEFT, RIGHT, BILATERAL = "LEFT", "RIGHT", "BILATERAL"
SIDE_WORDS = {
    "left": LEFT,
    "right": RIGHT,
    "bilateral": BILATERAL,
    "bilaterally": BILATERAL,
    "both": BILATERAL,
    "bibasilar": BILATERAL,
    "bibasal": BILATERAL,
    "biapical": BILATERAL,
}
RULES_FILE = Path(__file__).with_name("context_rules.yaml")


class ContextRuleError(VocabularyError):
    """A ConText rule file that does not validate; the message names the file, rule and field."""


@dataclass(frozen=True)
class ContextRuleSpec:
    """A ConText modifier rule (arguments of ``medspacy.context.ConTextRule``) and why it exists."""

    literal: str
    category: str
    direction: str
    pattern: list[dict[str, Any]] | None = None
    max_scope: int | None = None
    max_targets: int | None = None
    terminated_by: tuple[str, ...] = ()
    why: str = ""


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    literal: str
    category: str
    direction: Literal["FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO"]
    pattern: list[dict[str, Any]] | None = None
    max_scope: int | None = None
    max_targets: int | None = None
    terminated_by: list[str] = []
    why: str


class _RuleFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word_lists: dict[str, list[str]] = {}
    removed_default_rules: dict[str, str] = {}
    rules: list[_RuleModel]


@dataclass(frozen=True)
class ContextRules:
    """The project rules of one rule file and the literals of the medspaCy defaults it drops (-> why)."""

    rules: tuple[ContextRuleSpec, ...]
    removed_default_rules: dict[str, str]


def load_context_rules(path: str | Path = RULES_FILE) -> ContextRules:
    """Read and validate a ConText rule file (layout: the shipped ``context_rules.yaml``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ContextRuleError(f"{path}: not valid YAML: {err}") from None
    try:
        parsed = _RuleFileModel.model_validate(data)
    except ValidationError as err:
        raise ContextRuleError(validation_report(err, f"invalid ConText rules in {path}:")) from None
    rules = tuple(
        ContextRuleSpec(**{**r.model_dump(), "terminated_by": tuple(r.terminated_by)}) for r in parsed.rules
    )
    return ContextRules(rules, dict(parsed.removed_default_rules))


def _laterality_rules() -> tuple[ContextRuleSpec, ...]:
    """LEFT / RIGHT modify the one nearest finding within 4 tokens (max_targets=1: "left effusion
    and right pneumothorax"); prepositional forms ("effusion on the left") look backward only;
    BILATERAL modifies every finding in its (4-token) scope. Each side ends the scope of the others."""
    prepositions = ["in", "on", "at", "of", "within", "involving", "along", "over", "overlying", "from", "to"]
    sided = tuple(
        spec
        for side, word in ((LEFT, "left"), (RIGHT, "right"))
        for spec in (
            ContextRuleSpec(
                side.lower(),
                side,
                "BIDIRECTIONAL",
                [{"LOWER": {"IN": [word]}}],
                max_scope=4,
                max_targets=1,
                terminated_by=tuple({LEFT, RIGHT, BILATERAL} - {side}),
                why=f"'{word} pleural effusion', '{word} lower lobe opacity'",
            ),
            ContextRuleSpec(
                f"on the {side.lower()}",
                side,
                "BACKWARD",
                [{"LOWER": {"IN": prepositions}}, {"LOWER": "the", "OP": "?"}, {"LOWER": {"IN": [word]}}],
                max_scope=5,
                max_targets=1,
                terminated_by=tuple({LEFT, RIGHT, BILATERAL} - {side}),
                why=f"'effusion on the {word}', 'opacity in the {word} lower lobe'",
            ),
        )
    )
    both = (
        ContextRuleSpec(
            "bilateral",
            BILATERAL,
            "BIDIRECTIONAL",
            [{"LOWER": {"IN": [w for w, s in SIDE_WORDS.items() if s == BILATERAL]}}],
            max_scope=4,
            terminated_by=(LEFT, RIGHT),
            why="'bilateral effusions', 'bibasilar atelectasis', 'opacities in both lungs'",
        ),
        ContextRuleSpec(
            "left greater than right",
            BILATERAL,
            "BIDIRECTIONAL",
            [
                {"LOWER": {"IN": ["left", "right"]}},
                {
                    "LOWER": {
                        "IN": ["greater", "more", "larger", "worse", "bigger", "less", "smaller", ">", "<"]
                    }
                },
                {"LOWER": "than", "OP": "?"},
                {"LOWER": {"IN": ["left", "right"]}},
            ],
            max_scope=4,
            terminated_by=(LEFT, RIGHT),
            why="'effusions, left greater than right' names both sides; as single words the nearer side won",
        ),
    )
    return sided + both


_SHIPPED = load_context_rules()
# Rules medspaCy's defaults miss (the ``why`` of each names a sentence the defaults got wrong).
PROJECT_CONTEXT_RULES: tuple[ContextRuleSpec, ...] = _SHIPPED.rules
# Default medspaCy rules dropped because they are wrong for radiology reports (literal -> why).
REMOVED_DEFAULT_RULES: dict[str, str] = _SHIPPED.removed_default_rules
LATERALITY_RULES: tuple[ContextRuleSpec, ...] = _laterality_rules()


def to_context_rules(specs: Iterable[ContextRuleSpec]) -> list[Any]:
    """``ContextRuleSpec`` records -> ``medspacy.context.ConTextRule`` objects (medspaCy imported here: slow)."""
    from medspacy.context import ConTextRule

    return [
        ConTextRule(
            s.literal,
            s.category,
            pattern=s.pattern,
            direction=s.direction,
            max_scope=s.max_scope,
            max_targets=s.max_targets,
            terminated_by=set(s.terminated_by) or None,
        )
        for s in specs
    ]
