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
    assert result["suggested"] is None or (result["suggested"] in rows
                                           and not result["suggested"].startswith("1 thread"))
    text = (tmp_path / "wait_policy.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == len(set(table)) == 2 + len(rows)
    assert text in capsys.readouterr().out


def test_suggest_wants_idle_speed_and_no_collapse():
    def row(idle, loaded):          # idle and loaded times, the baseline's idle time being 1
        return {"idle": {"vs_baseline_idle": idle, "mean_ms": idle},
                "loaded": {"vs_baseline_idle": loaded, "mean_ms": loaded}}
    rows = {"w": {wait_policy.BASELINE: row(1.0, 9.0),       # collapses when loaded
                  "long spin": row(1.0, 5.0),                # collapses too (> 2x the best)
                  "short spin": row(1.04, 2.0),
                  "sleep": row(1.5, 1.2),                    # slower when idle
                  "1 thread (reference)": row(1.0, 1.0)}}    # not a candidate, but sets the best
    assert wait_policy.suggest(rows) == "short spin"
    rows["w"]["short spin"] = row(1.04, 2.5)
    assert wait_policy.suggest(rows) is None                 # a trade-off: the report says so
