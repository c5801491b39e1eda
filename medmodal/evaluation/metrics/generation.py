"""Natural-language generation metrics of generated reports (pycocoevalcap).

- BLEU-1..4 (Papineni et al. 2002): pycocoevalcap ``Bleu(4)``, corpus-level
  (n-gram counts pooled over all reports, brevity penalty on the total length).
- METEOR 1.5 (Denkowski & Lavie 2014): pycocoevalcap ``Meteor``, which runs
  ``meteor-1.5.jar`` with Java; corpus-level. ``None`` (and a warning) when
  ``java`` is not on PATH or the Java process fails. It takes ~10 s to start.
- ROUGE-L (Lin 2004): pycocoevalcap ``Rouge``, mean of the per-report LCS F-score (beta 1.2).
- CIDEr-D (Vedantam et al. 2015): pycocoevalcap ``Cider`` (x10 scale, Gaussian
  length penalty). Its IDF weights come from the references passed in, so scores
  depend on the whole test set; with a single report every n-gram has IDF 0
  and CIDEr is 0 by construction.

Tokenisation (ours, :func:`tokenize`): lower-case, then a regular expression
that keeps words and decimal numbers ("1.5") whole and makes every other
punctuation mark a token of its own ("effusion." -> "effusion ."). Punctuation
tokens are kept (R2Gen-style; they mark sentence ends); pass
``keep_punctuation=False`` to drop them. pycocoevalcap's PTBTokenizer is not
used: it needs a Java process too and removes punctuation.

Empty hypotheses are scored (as the empty string: 0 for that report); an empty
reference is an error, since no metric is defined against nothing.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+(?:'[^\W\d_]+)?|[^\w\s]|_")
_PUNCT = re.compile(r"^[^\w\s]$|^_$")


def tokenize(text: str, keep_punctuation: bool = True) -> list[str]:
    """Lower-cased word / number / punctuation tokens: ``"Small L effusion."`` -> ``["small", "l", "effusion", "."]``."""
    tokens = _TOKEN.findall(text.lower())
    if not keep_punctuation:
        tokens = [t for t in tokens if not _PUNCT.match(t)]
    return tokens


def report_counts(hypotheses: Sequence[str]) -> Counter[str]:
    """How often each distinct report occurs, reports compared as their :func:`tokenize` tokens
    (case, spacing and punctuation spacing do not make a report distinct)."""
    return Counter(" ".join(tokenize(h)) for h in hypotheses)


def _references(references: Sequence[str | Sequence[str]], n: int) -> list[list[str]]:
    if len(references) != n:
        raise ValueError(f"{len(references)} references for {n} hypotheses")
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref)
        if not refs or any(not isinstance(r, str) for r in refs):
            raise ValueError(f"references[{i}]: expected a string or a list of strings")
        out.append(refs)
    return out


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float | None:
    if shutil.which("java") is None:
        warnings.warn(
            "METEOR needs Java ('java' is not on PATH); meteor = None", RuntimeWarning, stacklevel=3
        )
        return None
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = None
    try:
        scorer = Meteor()
        score, _ = scorer.compute_score(gts, res)
        return float(score)
    except (OSError, ValueError, AssertionError) as err:  # Java failed (memory, jar): keep evaluating
        warnings.warn(
            f"METEOR failed ({type(err).__name__}: {err}); meteor = None", RuntimeWarning, stacklevel=3
        )
        return None
    finally:
        if scorer is not None:
            scorer.meteor_p.kill()  # do not leave the JVM behind
            scorer.meteor_p.wait()


def generation_metrics(
    references: Sequence[str | Sequence[str]],
    hypotheses: Sequence[str],
    meteor: bool = True,
    keep_punctuation: bool = True,
) -> dict[str, float | None]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of generated reports against references.

    Args:
        references: ``N`` reference reports (a string, or a list of strings when
            there are several references per study).
        hypotheses: ``N`` generated reports (may be empty strings).
        meteor: compute METEOR (starts a JVM, ~10 s); ``False`` gives ``None``.
        keep_punctuation: keep punctuation tokens (see module docstring).

    Returns:
        ``{"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "n_reports"}``.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    n = len(hypotheses)
    if n == 0:
        raise ValueError("no reports to score")
    refs = _references(references, n)

    def join(text: str) -> str:
        return " ".join(tokenize(text, keep_punctuation))

    gts = {i: [join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [join(h if isinstance(h, str) else "")] for i, h in enumerate(hypotheses)}
    empty = [i for i, rs in gts.items() if not any(rs)]
    if empty:
        raise ValueError(f"references {empty[:10]} have no tokens; drop studies without a reference report")

    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its progress
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    return {
        **{f"bleu_{k + 1}": float(b) for k, b in enumerate(bleu)},
        "meteor": _meteor(gts, res) if meteor else None,
        "rouge_l": float(rouge),
        "cider": float(cider),
        "n_reports": n,
    }
