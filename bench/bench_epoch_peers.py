"""Smoke test of ``bench/epoch_peers.py`` (the whole-epoch comparison with PyTorch and Keras) on a
few real reviews: it runs, interleaves the libraries and writes its report. Keras is not run here
(it lives in another environment); torch when installed."""

import json
import os

import epoch_peers  # bench/ is on sys.path: pytest puts a test file's folder there
import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("FASTRNN_DATA_DIR"),
                                reason="FASTRNN_DATA_DIR is not set")


def test_epoch_peers_report(tmp_path, capsys):
    assert epoch_peers.main(["--reviews", "256", "--rounds", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "epoch_peers.json").read_text())
    names = {"fastrnn", "fastrnn (mask_zero)"} | ({"torch"} if result["versions"]["torch"] else set())
    assert set(result["rows"]) == names and result["reviews"] == 256
    for row in result["rows"].values():
        assert len(row["all_s"]) == 2 and all(t > 0 for t in row["all_s"])
    assert result["rows"]["fastrnn"]["fastrnn_speedup"] == 1.0
    table = (tmp_path / "epoch_peers.md").read_text()
    assert "| fastrnn | " in table and table == capsys.readouterr().out
