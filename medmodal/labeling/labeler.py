"""Clinical finding labeler: findings in report text, with negation, uncertainty and laterality.

Pipeline (a blank spaCy English pipeline, nothing downloaded)::

    sentencizer -> report breaks -> medspaCy target matcher -> medspaCy ConText

- **sentencizer** (spaCy): sentences end at ``.``, ``!``, ``?``.
- **report breaks** (ours): a blank line and the ``[SEP]`` marker that
  :meth:`medmodal.data.types.Study.text` puts between sections also end a
  sentence, so "No effusion [SEP] Cardiomegaly" never negates the cardiomegaly.
  A single newline does not (reports are often hard-wrapped mid-sentence).
- **target matcher** (medspaCy): the phrases and token patterns of the
  :class:`~medmodal.labeling.vocabulary.Vocabulary`; overlapping matches keep the
  longest, so "airspace opacity" is consolidation and not also "opacity".
- **ConText** (medspaCy; Harkema et al., J Biomed Inform 2009): medspaCy's
  default English rules, minus a few that are wrong for radiology, plus the
  project rules of ``context_rules.yaml`` and the laterality rules, each with
  the reason it was added (:mod:`medmodal.labeling.context_rules`).

Status of one mention (:class:`Mention`):

- a ``negative_phrases`` match ("heart size is normal") -> ``"negative"``;
- modified by POSSIBLE_EXISTENCE -> ``"uncertain"`` (also when a negation applies
  too: a hedged negation is not a firm negative);
- else NEGATED_EXISTENCE -> ``"negative"``;
- else PROBABLE_EXISTENCE ("probable", "likely", "most suggestive of") -> ``"uncertain"``,
  or ``"positive"`` with ``ReportLabeler(probable_as="positive")``;
- else HYPOTHETICAL ("if", "evaluate for") -> ``"uncertain"``;
- else ``"positive"``. HISTORICAL and FAMILY do not change the status; they are
  kept in :attr:`Mention.modifiers`.

Laterality of one mention: LEFT / RIGHT / BILATERAL modifiers, plus side words
inside the matched phrase itself ("blunting of the left costophrenic angle");
BILATERAL, or both LEFT and RIGHT ("left greater than right"), -> ``"bilateral"``.

Report labels (:meth:`ReportLabeler.label`) aggregate the mentions of each
finding the CheXpert way (Irvin et al., AAAI 2019): positive if any mention is
positive, else uncertain if any is uncertain, else negative if any is negative,
else ``"absent"`` (never mentioned). The ``normal`` flag follows CheXpert's
"No Finding": ``"negative"`` when any finding is positive or uncertain, else
``"positive"`` when the report says anything at all we could read (a normality
phrase or a negated finding), else ``"absent"``.

Speed: building a labeler takes 5-10 s (importing medspaCy). Labeling runs at
about 340 reports/s on one idle CPU core (the 3,955 Open-i findings +
impression texts in 11.5 s with :meth:`ReportLabeler.label_many`), 150-170
reports/s on a busy shared machine; most of the time is spaCy's ``Matcher``
running ConText's token patterns.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from medmodal.config import SECTION_FIELDS
from medmodal.data.manifest import find_manifest_file
from medmodal.data.reports import split_report_sections
from medmodal.errors import InputNotFoundError
from medmodal.labeling.context_rules import (
    BILATERAL,
    HYPOTHETICAL,
    LATERALITY_RULES,
    LEFT,
    NEGATED,
    POSSIBLE,
    PROBABLE,
    PROJECT_CONTEXT_RULES,
    REMOVED_DEFAULT_RULES,
    RIGHT,
    SIDE_WORDS,
    ContextRuleSpec,
    to_context_rules,
)
from medmodal.labeling.vocabulary import NORMAL, Vocabulary, load_vocabulary

if TYPE_CHECKING:  # spaCy / medspaCy are imported lazily (medspaCy takes seconds to import)
    import pandas as pd
    from spacy.language import Language
    from spacy.tokens import Doc, Span

Status = Literal["positive", "negative", "uncertain"]
Label = Literal["positive", "negative", "uncertain", "absent"]
Laterality = Literal["left", "right", "bilateral"]

STATUSES: tuple[str, ...] = ("positive", "negative", "uncertain")
LABELS: tuple[str, ...] = ("positive", "negative", "uncertain", "absent")
# CheXpert aggregation order over the mentions of one finding in one report.
_PRECEDENCE = {"positive": 3, "uncertain": 2, "negative": 1}


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Mention:
    """One finding mention in a report.

    ``start`` / ``end`` are character offsets into the text given to the labeler
    (``text[start:end] == mention.text``). ``source`` says which vocabulary list
    matched: ``"finding"`` (a name of the finding), ``"negative"`` (a wording that
    asserts its absence) or ``"normal"`` (a normality phrase; ``finding == "normal"``).
    ``modifiers`` are the ConText categories that modify it, sorted.
    """

    finding: str
    text: str
    start: int
    end: int
    status: Status
    laterality: Laterality | None
    sentence: str
    modifiers: tuple[str, ...] = field(default=())
    source: Literal["finding", "negative", "normal"] = "finding"


def _status(categories: set[str], source: str, probable_as: Status = "uncertain") -> Status:
    if source == "negative":
        return "negative"
    if POSSIBLE in categories:
        return "uncertain"
    if NEGATED in categories:
        return "negative"
    if PROBABLE in categories:
        return probable_as
    if HYPOTHETICAL in categories:
        return "uncertain"
    return "positive"


def _laterality(categories: set[str], span: Span) -> Laterality | None:
    sides = {c for c in categories if c in (LEFT, RIGHT, BILATERAL)}
    sides |= {SIDE_WORDS[t.lower_] for t in span if t.lower_ in SIDE_WORDS}
    if BILATERAL in sides or {LEFT, RIGHT} <= sides:
        return "bilateral"
    if LEFT in sides:
        return "left"
    if RIGHT in sides:
        return "right"
    return None


def aggregate(statuses: Iterable[str]) -> Label:
    """CheXpert aggregation of one finding's mention statuses: positive > uncertain > negative; none -> absent."""
    best: Label = "absent"
    for s in statuses:
        if best == "absent" or _PRECEDENCE[s] > _PRECEDENCE[best]:
            best = s  # type: ignore[assignment]
    return best


# ----------------------------------------------------------------------------- pipeline
_BREAKS = "medmodal_report_breaks"
_SECTION_HEADER = re.compile(r"^[A-Z][A-Z ]{2,}$")


def _report_breaks(doc: Doc) -> Doc:
    """Sentence starts at blank lines, ``[SEP]`` markers and ``HEADER:`` lines (see module docstring)."""
    n = len(doc)
    for i, tok in enumerate(doc):
        if i + 1 >= n:
            break
        nxt = doc[i + 1]
        blank_line = tok.is_space and tok.text.count("\n") >= 2
        header_line = (
            tok.is_space and "\n" in tok.text and _SECTION_HEADER.match(nxt.text) is not None
            and i + 2 < n and doc[i + 2].text == ":"
        )  # fmt: skip
        if blank_line or header_line:
            nxt.is_sent_start = True
        elif tok.text == "[" and nxt.text == "SEP" and i + 2 < n and doc[i + 2].text == "]":
            if i > 0:
                tok.is_sent_start = True
            if i + 3 < n:
                doc[i + 3].is_sent_start = True
    return doc


def build_pipeline(vocabulary: Vocabulary, extra_context_rules: Sequence[ContextRuleSpec] = ()) -> Language:
    """The spaCy pipeline of the labeler (see module docstring). Imports medspaCy (a few seconds, once)."""
    # medspaCy's matcher module runs warnings.filterwarnings("ignore") at import,
    # which would silence every warning of the process; catch_warnings undoes it.
    with warnings.catch_warnings():
        import spacy
        from medspacy.context import ConText, ConTextRule
        from medspacy.target_matcher import TargetMatcher, TargetRule
        from spacy.language import Language

    if not Language.has_factory(_BREAKS):
        Language.component(_BREAKS, func=_report_breaks)

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe(_BREAKS)
    matcher = cast(TargetMatcher, nlp.add_pipe("medspacy_target_matcher"))  # spaCy types pipes as callables
    matcher.add(
        [
            TargetRule(r.literal, r.finding, pattern=r.pattern, metadata={"source": r.kind})
            for r in vocabulary.rules()
        ]
    )
    # Negation and uncertainty end each other's scope: "No pneumothorax, possible
    # small effusion" / "Possible effusion, no pneumothorax".
    context = cast(
        ConText,
        nlp.add_pipe(
            "medspacy_context",
            config={
                "rules": None,
                "terminating_types": {
                    NEGATED: [POSSIBLE, PROBABLE],
                    POSSIBLE: [NEGATED],
                    PROBABLE: [NEGATED],
                },
            },
        ),
    )
    defaults = [
        r
        for r in ConTextRule.from_json(context.DEFAULT_RULES_FILEPATH)
        if r.literal not in REMOVED_DEFAULT_RULES
    ]
    context.add(defaults)
    context.add(to_context_rules([*PROJECT_CONTEXT_RULES, *LATERALITY_RULES, *extra_context_rules]))
    return nlp


def _as_text(text: Any, index: int | None = None) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    if not isinstance(text, str):
        where = f" (item {index})" if index is not None else ""
        raise TypeError(f"report text must be str, got {type(text).__name__}{where}")
    return text


# ----------------------------------------------------------------------------- labeler
class ReportLabeler:
    """Extract findings from report text (medspaCy target matcher + ConText; see module docstring).

    Args:
        vocabulary: ``None`` (the shipped chest X-ray vocabulary), a shipped name
            (``"chest_xray"``), a YAML path, or a :class:`Vocabulary`.
        extra_context_rules: more ConText rules (:class:`ContextRuleSpec`) for a
            dataset's own wordings.
        probable_as: status of a mention hedged only with a high-likelihood word
            ("probable", "likely", "most suggestive of", "favored"; category
            ``PROBABLE_EXISTENCE``): ``"uncertain"`` (CheXpert's convention, the default)
            or ``"positive"`` (the Open-i MeSH indexers' convention, measured in docs/labeler.md).

    Example::

        labeler = ReportLabeler()
        labeler.label("No pneumothorax. Small left effusion.")["effusion"]   # "positive"
        labeler.mentions("Small left effusion.")[0].laterality                # "left"
    """

    def __init__(
        self,
        vocabulary: str | Path | Vocabulary | None = None,
        extra_context_rules: Sequence[ContextRuleSpec] = (),
        probable_as: Literal["uncertain", "positive"] = "uncertain",
    ) -> None:
        if probable_as not in ("uncertain", "positive"):
            raise ValueError(f"probable_as must be 'uncertain' or 'positive', got {probable_as!r}")
        self.vocabulary = load_vocabulary(vocabulary)
        self.probable_as: Status = probable_as
        self.nlp = build_pipeline(self.vocabulary, extra_context_rules)

    @property
    def findings(self) -> tuple[str, ...]:
        """The vocabulary's findings, in file order (without ``normal``)."""
        return self.vocabulary.finding_names

    @property
    def label_names(self) -> tuple[str, ...]:
        """Keys of :meth:`label`: the findings, then ``"normal"``."""
        return (*self.findings, NORMAL)

    # -- mentions
    def mentions(self, text: str) -> list[Mention]:
        """All finding mentions of one report, in text order."""
        return self._doc_mentions(self.nlp(_as_text(text)))

    def mentions_many(self, texts: Iterable[str], batch_size: int = 256) -> list[list[Mention]]:
        """:meth:`mentions` for many reports, streamed through ``nlp.pipe``."""
        clean = (_as_text(t, i) for i, t in enumerate(texts))
        return [self._doc_mentions(doc) for doc in self.nlp.pipe(clean, batch_size=batch_size)]

    def _doc_mentions(self, doc: Doc) -> list[Mention]:
        out = []
        for ent in doc.ents:
            categories = {m.category for m in ent._.modifiers}
            source = ent._.target_rule.metadata["source"]
            out.append(
                Mention(
                    finding=ent.label_,
                    text=ent.text,
                    start=ent.start_char,
                    end=ent.end_char,
                    status=_status(categories, source, self.probable_as),
                    laterality=_laterality(categories, ent),
                    sentence=ent.sent.text.strip(),
                    modifiers=tuple(sorted(categories)),
                    source=source,
                )
            )
        return out

    # -- labels
    def labels_from_mentions(self, mentions: Sequence[Mention]) -> dict[str, Label]:
        """Report labels (``{finding: status or "absent"}`` plus ``"normal"``) from its mentions."""
        by_finding: dict[str, list[str]] = {name: [] for name in self.label_names}
        for m in mentions:
            by_finding[m.finding].append(m.status)
        labels: dict[str, Label] = {name: aggregate(by_finding[name]) for name in self.findings}
        if any(v in ("positive", "uncertain") for v in labels.values()):
            normal: Label = "negative"
        elif mentions:
            normal = "positive"
        else:
            normal = "absent"
        labels[NORMAL] = normal
        return labels

    def label(self, text: str) -> dict[str, Label]:
        """``{finding: "positive" | "negative" | "uncertain" | "absent"}`` for one report, plus ``"normal"``."""
        return self.labels_from_mentions(self.mentions(text))

    def label_many(self, texts: Iterable[str], batch_size: int = 256) -> list[dict[str, Label]]:
        """:meth:`label` for many reports, streamed through ``nlp.pipe`` (see the module docstring for speed)."""
        return [self.labels_from_mentions(m) for m in self.mentions_many(texts, batch_size=batch_size)]


@functools.lru_cache(maxsize=1)
def default_labeler() -> ReportLabeler:
    """A shared :class:`ReportLabeler` with the shipped vocabulary (built once per process: ~5-10 s)."""
    return ReportLabeler()


# ----------------------------------------------------------------------------- helpers
def to_binary(
    labels: Sequence[Mapping[str, str]],
    findings: Sequence[str],
    uncertain_as: Literal["positive", "negative"] = "positive",
) -> np.ndarray:
    """Multi-hot presence matrix from report labels.

    Args:
        labels: ``N`` dicts from :meth:`ReportLabeler.label` / ``label_many``.
        findings: the ``F`` findings (columns), in order.
        uncertain_as: count an ``"uncertain"`` label as present (``"positive"``,
            CheXpert's U-Ones) or absent (``"negative"``, U-Zeros).

    Returns:
        int64 array ``[N, F]``: 1 where positive (or uncertain counted positive), else 0.
    """
    if uncertain_as not in ("positive", "negative"):
        raise ValueError(f"uncertain_as must be 'positive' or 'negative', got {uncertain_as!r}")
    present = {"positive"} | ({"uncertain"} if uncertain_as == "positive" else set())
    out = np.zeros((len(labels), len(findings)), dtype=np.int64)
    for i, lab in enumerate(labels):
        for j, f in enumerate(findings):
            if f not in lab:
                raise KeyError(f"labels[{i}] has no finding '{f}'; it has {sorted(lab)}")
            if lab[f] not in LABELS:
                raise ValueError(f"labels[{i}]['{f}'] = {lab[f]!r}; expected one of {LABELS}")
            out[i, j] = lab[f] in present
    return out


_CHEXPERT_CODES = {"positive": 1.0, "negative": 0.0, "uncertain": -1.0, "absent": float("nan")}
DEFAULT_FIELDS = ("findings", "impression")


def _read_table(path: Path) -> pd.DataFrame:
    """All cells as read (CSV: strings, ``""`` for empty); column names stripped and lower-cased."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "," if suffix == ".csv" else "\t"
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    elif suffix in (".jsonl", ".json"):
        table = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    elif suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        raise ValueError(
            f"{path}: unsupported table type '{suffix}' (use .csv, .tsv, .jsonl, .json or .parquet)"
        )
    # the manifest reader's rule: column names match after stripping spaces and ignoring case
    table.columns = [str(c).strip().lower() for c in table.columns]
    return table


def label_reports_file(
    manifest_or_csv: str | Path,
    out_csv: str | Path,
    fields: str | Sequence[str] | None = DEFAULT_FIELDS,
    labeler: ReportLabeler | None = None,
    vocabulary: str | Path | Vocabulary | None = None,
    id_column: str = "id",
    style: Literal["status", "chexpert"] = "status",
    batch_size: int = 256,
) -> pd.DataFrame:
    """Label the reports of a manifest / table and write one row per report to ``out_csv``.

    The text of a row is its ``fields`` joined by a blank line (a sentence
    break), empty cells skipped. As in a medmodal manifest, a row whose section
    columns (``indication`` / ``findings`` / ``impression``) are all empty or
    absent takes its sections from a ``report`` column
    (:func:`medmodal.data.reports.split_report_sections`).

    Args:
        manifest_or_csv: a dataset folder (its ``manifest.csv`` / ``.jsonl`` /
            ``.parquet``), or a ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.json`` /
            ``.parquet`` file. Images are not read or checked.
        out_csv: where to write the labels (parent folders are created).
        fields: column(s) holding the report text; ``None`` = findings + impression.
        labeler: a ready :class:`ReportLabeler`; else one is built from ``vocabulary``.
        id_column: copied as the first output column when present; else ``row``
            (1-based data row number) is written.
        style: ``"status"`` writes ``positive`` / ``negative`` / ``uncertain`` /
            ``absent``; ``"chexpert"`` writes CheXpert's codes ``1`` / ``0`` /
            ``-1`` / empty.

    Returns:
        The written table: ``[id or row, *findings, normal]``.
    """
    import pandas as pd

    if style not in ("status", "chexpert"):
        raise ValueError(f"style must be 'status' or 'chexpert', got {style!r}")
    path = Path(manifest_or_csv)
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    path = find_manifest_file(path) if path.is_dir() else path
    names = [fields] if isinstance(fields, str) else list(fields or DEFAULT_FIELDS)
    names = [f.strip().lower() for f in names]
    table = _read_table(path)
    has_report = "report" in table.columns
    missing = [f for f in names if f not in table.columns and not (has_report and f in SECTION_FIELDS)]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} to label; columns are {list(table.columns)}")
    section_columns = [c for c in SECTION_FIELDS if c in table.columns]

    def report_text(i: int, row: pd.Series) -> str:
        cells = {f: _as_text(row[f], i).strip() for f in names if f in table.columns}
        if has_report and not any(_as_text(row[c], i).strip() for c in section_columns):
            sections = split_report_sections(_as_text(row["report"], i))
            cells.update({f: sections[f] for f in names if f in SECTION_FIELDS})
        return "\n\n".join(cells[f] for f in names if cells.get(f))

    texts = [report_text(i, row) for i, (_, row) in enumerate(table.iterrows())]
    labeler = labeler or ReportLabeler(vocabulary)
    labels = labeler.label_many(texts, batch_size=batch_size)

    out = pd.DataFrame(labels, columns=list(labeler.label_names))
    if style == "chexpert":
        out = out.apply(lambda col: col.map(_CHEXPERT_CODES))
    id_key = id_column.strip().lower()
    if id_key in table.columns:
        out.insert(0, id_column, table[id_key].astype(str).to_numpy())
    else:
        out.insert(0, "row", np.arange(1, len(table) + 1))
    out_path = Path(out_csv)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(out_path, index=False)
    return out
