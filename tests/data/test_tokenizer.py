"""Word-level report tokenizer (HF tokenizers)."""

from __future__ import annotations

import json

import pytest

from medmodal.data.tokenizer import ReportTokenizer, join_words

REPORTS = [
    "No pleural effusion. [SEP] Heart size is normal.",
    "Small right pleural effusion. Heart size is normal.",
    "No pneumothorax or effusion; heart size normal.",
    "Café-au-lait spot. No pneumothorax.",
    "Left lower lobe opacity (likely atelectasis).",
    "Left lower lobe opacity, likely pneumonia; cafe coronary.",
]


@pytest.fixture(scope="module")
def tok() -> ReportTokenizer:
    return ReportTokenizer.train(REPORTS, min_freq=2)


def test_special_token_ids(tok):
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.sep_id) == (0, 1, 2, 3, 4)
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]"]


def test_normalisation_and_punctuation_split(tok):
    assert tok.tokenize("No EFFUSION.") == ["no", "effusion", "."]
    assert tok.tokenize("lobe opacity (likely") == ["lobe", "opacity", "(", "likely"]
    assert tok.token_to_id("cafe") is not None  # "Café" and "cafe": one word
    assert tok.encode("CAFÉ", 10) == tok.encode("cafe", 10)


def test_sep_in_text_is_one_special_token(tok):
    ids = tok.encode("no effusion [SEP] heart size normal", 20)
    assert ids.count(tok.sep_id) == 1
    assert tok.tokenize("no effusion [SEP] heart") == ["no", "effusion", "[SEP]", "heart"]


def test_unknown_words_map_to_unk_but_tokenize_keeps_the_word(tok):
    ids = tok.encode("No cardiomegaly.", 10)
    assert ids == [tok.token_to_id("no"), tok.unk_id, tok.token_to_id(".")]
    assert tok.tokenize("No Cardiomegaly.") == ["no", "cardiomegaly", "."]


def test_rare_words_are_left_out_by_min_freq_and_max_vocab_caps(tok):
    assert tok.token_to_id("atelectasis") is None  # seen once
    assert tok.token_to_id("effusion") is not None
    small = ReportTokenizer.train(REPORTS, min_freq=1, max_vocab=8)
    assert small.vocab_size == 8
    assert small.token_to_id(".") is not None  # the most frequent survive


def test_encode_truncates_and_keeps_eos(tok):
    text = "no pleural effusion . heart size is normal ."
    words = tok.encode(text, 100)
    assert len(words) == 9
    assert tok.encode(text, 4) == words[:4]
    framed = tok.encode(text, 5, add_bos_eos=True)
    assert framed == [tok.bos_id, *words[:3], tok.eos_id]
    assert tok.encode("", 5, add_bos_eos=True) == [tok.bos_id, tok.eos_id]
    with pytest.raises(ValueError):
        tok.encode(text, 1, add_bos_eos=True)


def test_tokenize_aligns_with_encode(tok):
    text = "Small right pleural effusion; mystery word. [SEP] Heart normal."
    assert len(tok.tokenize(text)) == len(tok.encode(text, 100))
    assert tok.tokenize(text, max_len=3) == tok.tokenize(text)[:3]


def test_decode_skips_specials_stops_at_eos_and_attaches_punctuation(tok):
    ids = tok.encode("no pleural effusion; heart size is normal.", 30, add_bos_eos=True)
    assert tok.decode(ids + [tok.pad_id, tok.pad_id]) == "no pleural effusion; heart size is normal."
    assert tok.decode([tok.token_to_id("no"), tok.eos_id, tok.token_to_id("effusion")]) == "no"
    assert join_words(["opacity", "(", "likely", "x", "-", "ray", ")", "."]) == "opacity (likely x-ray)."


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "sub" / "tokenizer.json"
    tok.save(path)
    json.loads(path.read_text())  # one JSON file
    assert list(path.parent.iterdir()) == [path]  # written through a temporary file, none left behind
    loaded = ReportTokenizer.load(path)
    assert loaded.vocab_size == tok.vocab_size
    for text in REPORTS:
        assert loaded.encode(text, 40, add_bos_eos=True) == tok.encode(text, 40, add_bos_eos=True)
        assert loaded.tokenize(text) == tok.tokenize(text)


def test_training_is_deterministic():
    a, b = ReportTokenizer.train(REPORTS), ReportTokenizer.train(list(REPORTS))
    assert [a.id_to_token(i) for i in range(a.vocab_size)] == [b.id_to_token(i) for i in range(b.vocab_size)]


def test_load_rejects_a_foreign_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    foreign = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
    foreign.save(str(tmp_path / "t.json"))
    with pytest.raises(ValueError, match="not a medmodal report tokenizer"):
        ReportTokenizer.load(tmp_path / "t.json")


def test_vocab_size_covers_every_id_even_with_special_tokens_in_training_text():
    from medmodal.data.tokenizer import ReportTokenizer

    tok = ReportTokenizer.train(["a b c [SEP] d e"], min_freq=1)
    ids = tok.encode("a b c d e", max_len=10)
    assert max(ids) < tok.vocab_size


def test_json_text_round_trip_matches_the_saved_file(tmp_path):
    tok = ReportTokenizer.train(["small left effusion", "no effusion"], min_freq=1)
    again = ReportTokenizer.from_json(tok.to_json())
    assert again.encode("small right effusion", max_len=8) == tok.encode("small right effusion", max_len=8)
    tok.save(tmp_path / "tokenizer.json")
    assert json.loads(tok.to_json()) == json.loads((tmp_path / "tokenizer.json").read_text())
