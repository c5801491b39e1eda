"""Finding vocabularies for the report labeler: which words name which finding.

A vocabulary is a YAML file (one per dataset / modality; a chest X-ray one ships
in ``medmodal/labeling/vocabularies/chest_xray.yaml``)::

    name: chest_xray
    findings:
      cardiomegaly:
        phrases: [cardiomegaly, enlarged cardiac silhouette, enlarged heart]
        patterns:                       # optional spaCy token patterns
          - [{LOWER: heart}, {LOWER: {IN: [is, appears]}}, {LOWER: enlarged}]
        negative_phrases: [heart size is normal, normal heart size]
        negative_patterns: []           # optional, like ``patterns``
      effusion:
        phrases: [pleural effusion(s), effusion(s), pleural fluid]
    normal:                             # phrases that assert a normal study
      phrases: [no acute cardiopulmonary abnormality, lungs are clear]

- ``phrases`` are matched case-insensitively, token by token (spaCy ``LOWER``).
  A trailing ``(s)`` or ``(es)`` on a word is shorthand for the singular and the
  plural: ``pleural effusion(s)`` stands for ``pleural effusion`` and
  ``pleural effusions`` (the blank spaCy pipeline has no lemmatiser).
- ``patterns`` are spaCy ``Matcher`` token patterns
  (https://spacy.io/usage/rule-based-matching), for wordings with slots.
- ``negative_phrases`` / ``negative_patterns`` *assert the absence* of the
  finding ("heart size is normal" -> cardiomegaly negative) without a negation
  cue that ConText could see.
- ``normal`` phrases make the report-level ``normal`` flag.

When matches overlap, the longest wins (medspaCy's target matcher), so
"airspace opacity" (consolidation) is not also counted as the generic "opacity".
A phrase may belong to one finding only; the loader says which two findings claim it.

Loading validates everything and fails with :class:`VocabularyError`, whose
message names the file and the dotted key, e.g.
``chest_xray.yaml: findings.cardiomegaly.patterns.0: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medmodal.config import validated
from medmodal.errors import ConfigError

VOCABULARY_DIR = Path(__file__).parent / "vocabularies"
DEFAULT_VOCABULARY = "chest_xray"
NORMAL = "normal"  # the reserved name of the report-level normality flag

_FINDING_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLURAL_SHORTHAND = re.compile(r"\((s|es)\)(?=\s|$)")

TokenPattern = list[dict[str, Any]]
RuleKind = Literal["finding", "negative", "normal"]


class VocabularyError(ConfigError):
    """A vocabulary that does not validate; the message names the file and each bad key."""


def expand_phrase(phrase: str) -> list[str]:
    """Expand the plural shorthand: ``"pleural effusion(s)"`` -> ``["pleural effusion", "pleural effusions"]``.

    Every ``(s)`` / ``(es)`` ending a word doubles the list (without / with the
    suffix). Whitespace is normalised and the result lower-cased.
    """
    words = phrase.lower().split()
    variants = [""]
    for word in words:
        m = _PLURAL_SHORTHAND.search(word)
        if m:
            stem = word[: m.start()]
            forms = [stem, stem + m.group(1)]
        else:
            forms = [word]
        variants = [f"{v} {f}".strip() for v in variants for f in forms]
    return variants


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_phrases(value: list[str]) -> list[str]:
    for i, p in enumerate(value):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"item {i} is empty; phrases are non-empty strings")
        if "(" in p.replace("(s)", "").replace("(es)", ""):
            raise ValueError(f"item {i} '{p}': only '(s)' / '(es)' may appear in parentheses")
    return value


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return False


def _check_patterns(value: list[TokenPattern]) -> list[TokenPattern]:
    # spaCy's own validator (Matcher(validate=True)) checks keys and operators;
    # the messages it gives are turned into ours here.
    from spacy.matcher import Matcher
    from spacy.vocab import Vocab

    matcher = Matcher(Vocab(), validate=True)
    for i, pattern in enumerate(value):
        if not pattern:
            raise ValueError(f"pattern {i} is empty")
        try:
            matcher.add(f"p{i}", [pattern])
        except (ValueError, TypeError, KeyError) as err:  # spaCy's MatchPatternError is a ValueError
            detail = " ".join(str(err).split())
            if _has_bool(pattern):
                detail += ' (YAML reads bare no / yes / on / off as booleans: quote them, e.g. "no")'
            raise ValueError(f"pattern {i} is not a valid spaCy token pattern: {detail}") from None
    return value


class FindingSpec(_Strict):
    """How one finding is written: phrases / token patterns, and wordings that assert its absence."""

    phrases: list[str] = Field(default_factory=list)
    patterns: list[TokenPattern] = Field(default_factory=list)
    negative_phrases: list[str] = Field(default_factory=list)
    negative_patterns: list[TokenPattern] = Field(default_factory=list)
    description: str = ""

    _phrases_ok = field_validator("phrases", "negative_phrases")(_check_phrases)
    _patterns_ok = field_validator("patterns", "negative_patterns")(_check_patterns)


class NormalSpec(_Strict):
    """Wordings that assert a normal study ("no acute cardiopulmonary abnormality")."""

    phrases: list[str] = Field(default_factory=list)
    patterns: list[TokenPattern] = Field(default_factory=list)

    _phrases_ok = field_validator("phrases")(_check_phrases)
    _patterns_ok = field_validator("patterns")(_check_patterns)


@dataclass(frozen=True)
class MatchRule:
    """One rule for the target matcher: a phrase (``pattern is None``) or a token pattern."""

    finding: str  # finding name, or NORMAL
    kind: RuleKind
    literal: str
    pattern: TokenPattern | None = None


class Vocabulary(_Strict):
    """A validated finding vocabulary (see the module docstring for the YAML layout)."""

    name: str = "custom"
    description: str = ""
    findings: dict[str, FindingSpec]
    normal: NormalSpec = Field(default_factory=NormalSpec)

    @field_validator("findings")
    @classmethod
    def _valid_findings(cls, value: dict[str, FindingSpec]) -> dict[str, FindingSpec]:
        if not value:
            raise ValueError("at least one finding is needed")
        for name, spec in value.items():
            if not _FINDING_NAME.match(name):
                raise ValueError(f"finding name '{name}': use lower-case letters, digits and '_'")
            if name == NORMAL:
                raise ValueError(f"'{NORMAL}' is reserved for the top-level 'normal' section")
            if not spec.phrases and not spec.patterns:
                raise ValueError(f"finding '{name}' has neither phrases nor patterns")
        # A phrase claimed by two findings (or as both positive and negative)
        # would make the label depend on rule order: refuse it.
        owner: dict[str, str] = {}
        for name, spec in value.items():
            for key in ("phrases", "negative_phrases"):
                for phrase in getattr(spec, key):
                    for form in expand_phrase(phrase):
                        where = f"{name}.{key}"
                        if form in owner and owner[form] != where:
                            raise ValueError(f"phrase '{form}' appears in both {owner[form]} and {where}")
                        owner[form] = where
        return value

    @property
    def finding_names(self) -> tuple[str, ...]:
        """The findings in file order (without the ``normal`` flag)."""
        return tuple(self.findings)

    def rules(self) -> Iterator[MatchRule]:
        """Every phrase (plural shorthand expanded) and pattern as a :class:`MatchRule`."""
        for name, spec in self.findings.items():
            yield from _rules_for(name, "finding", spec.phrases, spec.patterns)
            yield from _rules_for(name, "negative", spec.negative_phrases, spec.negative_patterns)
        yield from _rules_for(NORMAL, "normal", self.normal.phrases, self.normal.patterns)


def _rules_for(
    finding: str, kind: RuleKind, phrases: list[str], patterns: list[TokenPattern]
) -> Iterator[MatchRule]:
    seen: set[str] = set()
    for phrase in phrases:
        for form in expand_phrase(phrase):
            if form not in seen:
                seen.add(form)
                yield MatchRule(finding, kind, form)
    for i, pattern in enumerate(patterns):
        yield MatchRule(finding, kind, f"{finding}:{kind}:pattern{i}", pattern)


def vocabulary_from_dict(data: Any, source: str = "<dict>") -> Vocabulary:
    """Validate a parsed YAML mapping; errors name ``source`` and each bad key."""
    return validated(
        Vocabulary,
        data,
        "vocabulary",
        source,
        error=VocabularyError,
        not_a_mapping="expected a mapping with a 'findings' key",
        unknown_key="unknown key (expected phrases, patterns, negative_phrases, negative_patterns, description)",
        strip_value_error=True,
    )


def available_vocabularies() -> list[str]:
    """Names of the vocabularies shipped with medmodal (usable in :func:`load_vocabulary`)."""
    return sorted(p.stem for p in VOCABULARY_DIR.glob("*.yaml"))


def load_vocabulary(source: str | Path | Vocabulary | None = None) -> Vocabulary:
    """A :class:`Vocabulary` from a YAML path, a shipped name (``"chest_xray"``), or ``None`` (the default).

    Raises:
        VocabularyError: the file is missing, is not YAML, or does not validate.
    """
    if isinstance(source, Vocabulary):
        return source
    if source is None:
        source = DEFAULT_VOCABULARY
    path = Path(source)
    if not path.suffix and (VOCABULARY_DIR / f"{source}.yaml").exists():
        path = VOCABULARY_DIR / f"{source}.yaml"
    if not path.is_file():
        raise VocabularyError(
            f"vocabulary '{source}' not found: give a YAML path or one of {available_vocabularies()}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise VocabularyError(f"{path}: not valid YAML: {err}") from None
    return vocabulary_from_dict(data, source=str(path))
