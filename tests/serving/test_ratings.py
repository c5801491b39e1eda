"""Reader ratings: storage, replacement, CSV export, summary and Cohen's kappa."""

from __future__ import annotations

import csv
import io

import pytest

from medmodal.serving.ratings import Rating, RatingStore, summarise_ratings


def kappa_table_ratings(store: RatingStore) -> None:
    """50 shared cases: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.

    p_o = 35/50 = 0.7; A says yes 25/50, B 30/50, so p_e = 0.5*0.6 + 0.5*0.4 = 0.5;
    kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    """
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    for i, (a, b) in enumerate(pairs):
        store.add(Rating(study_id=f"s{i:02d}", reader="alice", acceptable=a))
        store.add(Rating(study_id=f"s{i:02d}", reader="bob", acceptable=b,
                         errors=() if b else ("missed_finding",)))


def test_kappa_matches_the_hand_computed_value(tmp_path):
    store = RatingStore(tmp_path / "ratings.db")
    kappa_table_ratings(store)
    store.add(Rating(study_id="only-carol", reader="carol", acceptable=True))
    summary = store.summary()
    pair = next(p for p in summary["agreement"] if p["readers"] == ["alice", "bob"])
    assert pair["shared_cases"] == 50
    assert pair["observed_agreement"] == pytest.approx(0.7)
    assert pair["kappa"] == pytest.approx(0.4)
    carol = next(p for p in summary["agreement"] if p["readers"] == ["alice", "carol"])
    assert carol["shared_cases"] == 0 and carol["kappa"] is None
    assert summary["n_ratings"] == 101
    assert summary["acceptance_rate"] == pytest.approx((25 + 30 + 1) / 101)
    assert summary["error_counts"]["missed_finding"] == 20  # bob's "no" answers
    assert summary["per_reader"]["bob"] == {"n_ratings": 50, "acceptance_rate": pytest.approx(0.6)}


def test_rating_again_replaces_and_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = RatingStore(url)
    store.add(Rating(study_id="s1", reader="alice", acceptable=False, errors=("false_finding",), comment="first"))
    store.add(Rating(study_id="s1", reader="alice", acceptable=True, comment="second"))
    rows = RatingStore(url).records()  # a new engine: the data is in the database
    assert len(rows) == 1
    assert rows[0]["acceptable"] is True and rows[0]["false_finding"] is False and rows[0]["comment"] == "second"


def test_csv_export(tmp_path):
    store = RatingStore(tmp_path / "r.db")
    store.add(Rating(study_id="s1", reader="alice", acceptable=False, errors=("wrong_laterality", "wrong_severity"),
                     comment='says "left", is right'))
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
    records = [{"study_id": f"s{i}", "reader": r, "model": "", "acceptable": True, "missed_finding": False,
                "false_finding": False, "wrong_laterality": False, "wrong_severity": False}
               for i in range(3) for r in ("a", "b")]
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
