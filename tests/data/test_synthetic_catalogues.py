"""The generator's catalogues (history items, sites) are data files, validated on load."""

import pytest

from medmodal.data.synthetic.data_files import read_catalogue
from medmodal.data.synthetic.history import HISTORY_ITEMS, HistoryItem
from medmodal.data.synthetic.sites import BUILTIN_SITES, SiteProfile


def test_shipped_catalogues_load_as_records():
    assert [s.name for s in BUILTIN_SITES] == ["outpatient", "emergency", "icu"]
    assert isinstance(BUILTIN_SITES[0].visits, tuple) and BUILTIN_SITES[2].central_line_rate == 0.4
    assert HISTORY_ITEMS["chf"].labels == ("cardiomegaly", "edema", "effusion")
    assert HISTORY_ITEMS["line_placement"].implies_line and HISTORY_ITEMS["line_placement"].needs_side
    assert all(item.texts for item in HISTORY_ITEMS.values())


def test_a_bad_entry_names_file_and_key(tmp_path):
    path = tmp_path / "history_items.yaml"
    path.write_text("chf:\n  labels: [edema]\n  texts: [Dyspnea.]\n  weight: heavy\n")
    with pytest.raises(ValueError, match=r"history_items\.yaml: chf\.weight"):
        read_catalogue(path, dict[str, HistoryItem])
    path.write_text("- name: x\n")
    with pytest.raises(ValueError, match=r"0\.patient_share"):
        read_catalogue(path, list[SiteProfile])
