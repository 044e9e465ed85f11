"""Smoke test of ``bench/wait_policy.py`` at a tiny size: every candidate runs in its own process,
idle and with a busy core, and the report is written. No timing is checked."""

import json

import wait_policy  # bench/ is on sys.path: pytest puts a test file's folder there

from fastrnn import bench

TINY = {"tiny": bench.Size(T=3, B=2, D=4, H=3, V=20)}


def test_wait_policy_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(wait_policy, "WORKLOADS", TINY)
    monkeypatch.setattr(wait_policy, "STEPS", {"tiny": 3})
    picked = ["OMP_WAIT_POLICY=PASSIVE", "GOMP_SPINCOUNT=1000", "1 thread (reference)"]
    assert wait_policy.main(["--rounds", "1", "--workloads", "tiny", "--candidates",
                             ",".join(picked), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "wait_policy.json").read_text())
    rows = result["rows"]["tiny"]
    assert list(rows) == [wait_policy.BASELINE, *picked]          # the baseline is always run
    for name, row in rows.items():
        assert set(row) == {"idle", "loaded"}
        assert all(part["mean_ms"] > 0 and len(part["rounds_ms"]) == 1 for part in row.values())
        assert row["idle"]["threads"] == (1 if name.startswith("1 thread") else 2)
    assert rows[wait_policy.BASELINE]["idle"]["vs_baseline_idle"] == 1.0
    assert result["suggested"] in rows and not result["suggested"].startswith("1 thread")
    text = (tmp_path / "wait_policy.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == len(set(table)) == 2 + len(rows)
    assert text in capsys.readouterr().out


def test_suggest_skips_settings_slower_when_idle():
    def part(vs):
        return {"vs_baseline_idle": vs}
    rows = {"w": {wait_policy.BASELINE: {"idle": part(1.0), "loaded": part(9.0)},
                  "spin": {"idle": part(1.01), "loaded": part(1.5)},
                  "sleep": {"idle": part(2.0), "loaded": part(1.1)},
                  "1 thread (reference)": {"idle": part(1.0), "loaded": part(1.0)}}}
    assert wait_policy.suggest(rows) == "spin"
