"""``medmodal import``: the format list, a missing format name, the old command names.

(Moved from tests/data/importers/test_registry.py; running a format is tested there, with its tables.)
"""

from __future__ import annotations

import json

from medmodal.cli.main import main
from medmodal.data.importers.registry import available


def test_list(capsys):
    assert main(["import", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == available()
    assert main(["-q", "import"]) == 2
    assert "name a FORMAT" in capsys.readouterr().err


def test_old_command_names_are_aliases(tmp_path, capsys):
    xml = tmp_path / "xml"
    xml.mkdir()
    (xml / "1.xml").write_text('<eCitation><uId id="CXR1"/><Abstract><AbstractText Label="FINDINGS">Clear lungs.'
                               '</AbstractText></Abstract></eCitation>')  # fmt: skip
    assert main(["-q", "import-openi", str(xml), str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["-q", "import", "openi", str(xml), str(tmp_path / "b")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["rows_written"] == second["rows_written"] == 1


def test_a_missing_source_is_a_one_line_error(tmp_path, capsys):
    assert main(["-q", "import", "rsna-pneumonia", str(tmp_path / "absent"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'absent'}: not found\n"
