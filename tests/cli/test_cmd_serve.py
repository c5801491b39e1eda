"""``medmodal serve``: unsafe settings are refused before any model is loaded, as one-line errors (exit 2).

(Moved from tests/serving/test_api.py; the checks run before the run folder is read, so an empty
folder stands in for a trained run.)
"""

from __future__ import annotations

from medmodal.cli.main import main

KEY = "k3y-for-tests-0123456789"


def test_serve_cli_refuses_public_host_without_key(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "needs an API key" in capsys.readouterr().err


def test_serve_cli_refuses_a_key_of_spaces(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDMODAL_TEST_KEY", " " * 32)
    assert main(["serve", str(tmp_path), "--api-key-env", "MEDMODAL_TEST_KEY"]) == 2
    assert "MEDMODAL_TEST_KEY" in capsys.readouterr().err


def test_serve_cli_refuses_a_wildcard_bind_without_host_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDMODAL_TEST_KEY", KEY)
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0", "--api-key-env", "MEDMODAL_TEST_KEY"]) == 2
    assert "--allowed-host" in capsys.readouterr().err
