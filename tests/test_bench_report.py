"""The benchmark report's honesty rules (``fastrnn.bench``): no row above the GEMM peak, no repeated
row or table line, peers timed in their own clean processes; a chart is drawn. Tiny and untimed."""

import os
import subprocess
import sys
import time
import types

import pytest

from fastrnn import bench, cli

PEAKS = {"float32": 100.0, "float64": 50.0}


def row(backend="numba", gflops=10.0, op="step", size="notebook", dtype="float32", median_s=1e-3):
    samples = [0.9 * median_s, median_s, 1.2 * median_s]
    return {"op": op, "size": size, "dtype": dtype, "backend": backend, "median_s": median_s,
            "gflops": gflops, "samples": samples, "vs_torch": None, "vs_numpy": None,
            "vs_torch_iqr": None, "vs_numpy_iqr": None}


def pair():
    """A numba and a numpy row of one op with their per-round ratios filled in."""
    rows = [row("numba", 20.0, median_s=1e-3), row("numpy", 2.0, median_s=1e-2)]
    samples = {r["backend"]: r["samples"] for r in rows}
    for r in rows:
        r["vs_numpy"] = bench.speedup(samples, r["backend"], "numpy")
        r["vs_numpy_iqr"] = bench.quartiles(bench.ratios(samples, r["backend"], "numpy"))
    return rows


def test_report_has_one_header_and_no_repeated_line():
    text = bench.report(pair(), PEAKS, ["date: now"])
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == len(set(table))
    assert sum(line.startswith("| op |") for line in table) == 1
    assert "| step | notebook | float32 | numba | 1.000 |" in text


def test_row_above_the_gemm_peak_raises():
    with pytest.raises(bench.ImpossibleResult, match="impossible"):
        bench.report([row(gflops=100.5)], PEAKS, [])
    bench.report([row(gflops=99.0)], PEAKS, [])                # at or below the peak is fine


def test_repeated_row_raises():
    with pytest.raises(bench.ImpossibleResult, match="twice"):
        bench.report([row(), row()], PEAKS, [])


def test_repeated_choices_are_dropped():
    assert bench._choices("size", list(bench.SIZES))("notebook,wide,notebook") == ["notebook", "wide"]


def test_subprocess_environment_drops_machine_caps():
    env = bench.child_env({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1", "PATH": "/bin",
                           "OMP_WAIT_POLICY": "PASSIVE"})
    assert env == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}     # the caller's choices stay


def test_each_backend_runs_in_its_own_process():
    procs, missing = bench.start_backends(["numba", "numpy"], threads=1)
    try:
        assert not missing and procs["numba"].info["threads"] == 1
        pids = {p.proc.pid for p in procs.values()}
        assert len(pids) == 2
        rows = bench.run(["step"], ["notebook"], ["float32"], procs, repeats=1, min_sample=0.0,
                         settle=0.0)
    finally:
        for p in procs.values():
            p.close()
    assert [r["backend"] for r in rows] == ["numba", "numpy"]
    assert all(r["median_s"] > 0 and r["vs_numpy"] is not None for r in rows)


def test_chart_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    bench.plot(pair(), tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_thread_wait_policy_sleeps_on_a_busy_machine_and_yields_to_the_caller():
    for load, want in ((0.0, {}), (0.49, {}), (0.5, cli.BUSY_ENV), (1.7, cli.BUSY_ENV),
                       (None, {})):
        env = {}
        cli.apply_thread_wait_policy(env, busy=lambda load=load: load)
        assert env == want, load
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}):
        env = dict(chosen)
        cli.apply_thread_wait_policy(env, busy=lambda: 2.0)
        assert env == chosen


def test_busy_cores_sees_a_busy_process():
    if cli.busy_cores() is None:
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        assert cli.busy_cores(0.3) >= 0.5                 # one core of the spinner, at least
    finally:
        spinner.kill()
        spinner.wait()


def test_fastrnn_bench_runs_with_the_callers_environment(monkeypatch):
    """The ``fastrnn`` program sets its wait policy for train/evaluate/predict, never for bench:
    ``fastrnn bench`` and ``python -m fastrnn.bench`` time the same thing."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)                     # absent now, and absent again afterwards
    monkeypatch.setattr(cli, "busy_cores", lambda: 2.0)     # a busy machine: train would set it
    seen = {}
    fake = types.ModuleType("fastrnn.bench")
    fake.main = lambda argv: seen.update({k: k in os.environ for k in cli.BUSY_ENV}) or 0
    monkeypatch.setitem(sys.modules, "fastrnn.bench", fake)
    monkeypatch.setattr(sys, "argv", ["fastrnn", "bench", "--repeats", "1"])
    assert cli.main() == 0 and seen and not any(seen.values())
    monkeypatch.setattr(sys, "argv", ["fastrnn", "train", "--help"])
    assert cli.main() == 0
    assert all(os.environ.get(k) == v for k, v in cli.BUSY_ENV.items())
