"""``medmodal prepare``: shards written, a clash with earlier prepared data and bad sizes as one-line errors.

(Moved from tests/data/test_prepare.py; what the shards hold is tested there.)
"""

from __future__ import annotations

from medmodal.cli.main import main
from medmodal.data.prepared import read_index


def test_cli_prepare_writes_shards_and_reports_a_clash_in_one_line(tiny_data, tmp_path, capsys):
    out = tmp_path / "prep"
    assert (
        main(
            [
                "--quiet",
                "prepare",
                str(tiny_data),
                str(out),
                "--image-size",
                "32",
                "--studies-per-shard",
                "40",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "prepared 120 studies" in printed and "train 84 in 3 shard(s)" in printed
    assert read_index(out).image_size == 32
    assert main(["--quiet", "prepare", str(tiny_data), str(out)]) == 2
    assert "already holds prepared data" in capsys.readouterr().err


def test_a_bad_shard_size_is_a_usage_error(tiny_data, tmp_path, capsys):
    assert (
        main(["--quiet", "prepare", str(tiny_data), str(tmp_path / "prep"), "--studies-per-shard", "0"]) == 2
    )
    assert capsys.readouterr().err == "error: --studies-per-shard and --chunk-rows must be >= 1\n"
