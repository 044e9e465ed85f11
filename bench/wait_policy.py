"""How should OpenMP worker threads wait? A fixed training-step workload under each candidate
setting, on an idle machine and with one core kept busy by another process.

Numba's ``omp`` threading layer runs each parallel region of a step on libgomp's thread pool. Between
regions the workers wait: spinning (fast to wake, but a spinning thread holds a core another process
may need) or sleeping (free cores, but every region pays a wake-up). libgomp's knobs: ``OMP_WAIT_POLICY``
(``PASSIVE`` sleeps at once, ``ACTIVE`` spins for minutes, unset spins ~300,000 iterations, about a
few ms, then sleeps) and ``GOMP_SPINCOUNT`` (spin iterations before sleeping; overrides the policy's
count). Also measured: Numba's ``workqueue`` layer (its own pool, no OpenMP) and one thread, as
references.

Each measurement is a fresh Python process (libgomp reads its environment once, at load) that loads
the cached kernels, warms up and then times ``steps`` float32 training steps (``fastrnn.kernels.
train_step``, Adam, dense embedding: the `fastrnn.bench` ``step`` op) with 2 Numba threads. Its result
is the mean time per step (total / steps: a collapse shows in the total, not in the median step) and
the median step. Each round measures every candidate idle, then every candidate loaded (the order
of candidates reversed every other round); the table holds medians over rounds. "Loaded":
one ``python -c "while True: pass"`` process runs for the whole measurement.

    python bench/wait_policy.py --rounds 5 --out bench/results      # ~10 min on 2 idle cores

writes ``wait_policy.md`` and ``wait_policy.json``. Run it on an otherwise quiet machine: on a shared
one, the "idle" column is not idle.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fastrnn import bench

THREADS = 2
WORKLOADS = {"notebook": bench.SIZES["notebook"], "chollet": bench.SIZES["chollet"]}
STEPS = {"notebook": 400, "chollet": 30}       # about 0.2 s of steps each on 2 idle cores
WARMUP = 5

# name -> environment of the child (on top of the caller's without the variables below)
CANDIDATES = {
    "unset (libgomp default)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "OMP_WAIT_POLICY=ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=100000": {"GOMP_SPINCOUNT": "100000"},
    "GOMP_SPINCOUNT=1000000": {"GOMP_SPINCOUNT": "1000000"},
    "NUMBA_THREADING_LAYER=workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "1 thread (reference)": {"NUMBA_NUM_THREADS": "1"},
    "the fastrnn command (PASSIVE when busy)": {"FASTRNN_WAIT_AS_CLI": "1"},
}
BASELINE = "unset (libgomp default)"            # what a program using the library gets
# removed from the caller's environment, so that each candidate is exactly what it says
CONTROLLED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
              "NUMBA_THREADING_LAYER", *bench.MACHINE_ONLY_ENV)

CHILD = r"""
import json, os, sys, time
if os.environ.pop("FASTRNN_WAIT_AS_CLI", None):      # decide as the fastrnn program does
    from fastrnn import cli
    cli.apply_thread_wait_policy()
from fastrnn import bench
T, B, D, H, V = json.loads(sys.argv[1])
steps, warmup = int(sys.argv[2]), int(sys.argv[3])
fn = bench.make_op("step", "numba", bench.make_batch(bench.Size(T, B, D, H, V), "float32"))
for _ in range(warmup):
    fn()
times = []
t0 = time.perf_counter()
for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
total = time.perf_counter() - t0
c0 = time.process_time()
time.sleep(0.3)                 # only the waiting worker threads run now: their spin is CPU time
spin = time.process_time() - c0
import numba
times.sort()
print(json.dumps({"mean_s": total / steps, "median_s": times[len(times) // 2], "spin_s": spin,
                  "threads": numba.get_num_threads(), "layer": numba.threading_layer(),
                  "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}))
"""


def child_env(extra):
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    env["NUMBA_NUM_THREADS"] = str(THREADS)
    env.update(extra)
    return env


def measure_once(size, steps, env, warmup=WARMUP, timeout=900):
    """One fresh process timing ``steps`` steps: ``{"mean_s", "median_s", "spin_s" (CPU seconds
    spent in the 0.3 s after the last step), "threads", "layer"}``."""
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(size[:5])), str(steps),
                          str(warmup)], env=child_env(env), capture_output=True, text=True,
                         timeout=timeout, check=False)
    if out.returncode:
        raise RuntimeError(f"the measuring process failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class BusyCore:
    """Another process keeping one core busy while the block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def measure(workloads=WORKLOADS, steps=STEPS, candidates=CANDIDATES, rounds=3,
            loads=("idle", "loaded"), warmup=WARMUP, log=None):
    """``results[workload][candidate][load]`` = list (one per round) of child results."""
    results = {w: {c: {load: [] for load in loads} for c in candidates} for w in workloads}
    names = list(candidates)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for load in loads:
            with BusyCore() if load == "loaded" else contextlib.nullcontext():
                for w, size in workloads.items():
                    for c in order:
                        res = measure_once(size, steps[w], candidates[c], warmup)
                        results[w][c][load].append(res)
                        if log:
                            log(f"round {r + 1} {load:6} {w:8} {c:32} "
                                f"{1e3 * res['mean_s']:8.3f} ms/step")
    return results


def summarise(results, baseline=BASELINE):
    """Medians over rounds: ``rows[workload][candidate] = {load: {mean_ms, median_step_ms,
    vs_baseline_idle, ...}}``; ``vs_baseline_idle`` is the median over rounds of this time / the
    baseline's idle time of the same round (> 1 is slower; per-round ratios cancel drift)."""
    rows = {}
    for w, by_candidate in results.items():
        base = by_candidate.get(baseline, {}).get("idle")
        rows[w] = {}
        for c, by_load in by_candidate.items():
            row = {}
            for load, runs in by_load.items():
                mean = statistics.median(x["mean_s"] for x in runs)
                vs = statistics.median(x["mean_s"] / b["mean_s"] for x, b in zip(runs, base)) \
                    if base else None
                row[load] = {"mean_ms": 1e3 * mean,
                             "median_step_ms": 1e3 * statistics.median(x["median_s"] for x in runs),
                             "spin_ms": 1e3 * statistics.median(x["spin_s"] for x in runs),
                             "vs_baseline_idle": vs,
                             "rounds_ms": [1e3 * x["mean_s"] for x in runs],
                             "layer": runs[0]["layer"], "threads": runs[0]["threads"]}
            rows[w][c] = row
    return rows


def suggest(rows, baseline=BASELINE, tolerance=0.05, collapse=2.0):
    """The setting for the ``fastrnn`` command, or None when no setting has both properties:

    - no slower than the baseline idle: at most ``tolerance`` slower on every workload;
    - no collapse when loaded: on every workload, its loaded time within ``collapse`` x the best
      loaded time any setting reached there.

    Among those, the smallest worst loaded slow-down. Settings with fewer threads (the 1-thread
    reference) are not candidates; each setting must have been measured idle and loaded."""
    names = [c for c in next(iter(rows.values())) if not c.startswith("1 thread")]
    if not all("idle" in rows[w][c] and "loaded" in rows[w][c] for w in rows for c in names):
        return None
    best_loaded = {w: min(r["loaded"]["mean_ms"] for r in rows[w].values()) for w in rows}
    fits = [c for c in names
            if all(rows[w][c]["idle"]["vs_baseline_idle"] <= 1 + tolerance
                   and rows[w][c]["loaded"]["mean_ms"] <= collapse * best_loaded[w] for w in rows)]
    return min(fits, key=lambda c: max(rows[w][c]["loaded"]["vs_baseline_idle"] for w in rows),
               default=None)


def markdown(summary, info):
    lines = ["# OpenMP wait policy: a training step idle and with one core busy", "",
             *(f"- {line}" for line in info["header"]), "",
             ("Time per float32 training step (Adam, dense embedding, 2 Numba threads): the mean "
              "over a fixed number of steps in a fresh process, median over rounds. \"vs unset\": "
              "median over rounds of this time / the idle time with nothing set in the same round "
              "(what a program importing fastrnn gets); above 1 is slower. \"loaded\": another "
              "process keeps one core busy. The last column is the CPU time the process spends "
              "in the 0.3 s after its last step: the worker threads spinning before they sleep "
              "(time a waiting thread takes from other processes)."), ""]
    for w, rows in summary["rows"].items():
        s = WORKLOADS.get(w)
        dims = f" (T={s.T}, B={s.B}, D={s.D}, H={s.H}, V={s.V})" if s else ""
        lines += [f"## {w}{dims}, {info['steps'][w]} steps", "",
                  "| setting | idle ms/step | idle vs unset | loaded ms/step | loaded vs unset idle "
                  "| loaded / idle | CPU ms spent waiting after the last step (idle) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for c, row in rows.items():
            idle, loaded = row.get("idle"), row.get("loaded")
            cells = [c]
            for part in (idle, loaded):
                cells += ["", ""] if part is None else [
                    f"{part['mean_ms']:.3f}", _x(part["vs_baseline_idle"])]
            cells.append(_x(loaded["mean_ms"] / idle["mean_ms"]) if idle and loaded else "")
            cells.append(f"{idle['spin_ms']:.1f}" if idle else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    verdict = (f"Suggested by this run: **{summary['suggested']}**" if summary["suggested"] else
               "**No setting has both properties in this run**: it is a trade-off between the two "
               "columns; choose from the tables")
    lines += [verdict + " (wanted: at most 5% slower than unset when idle on every workload, and "
              "when loaded within 2x of the best loaded time measured; among those, the smallest "
              "worst loaded slow-down; decide on a quiet machine). The `fastrnn` command "
              f"{info['fastrnn_command']}.", ""]
    return "\n".join(lines)


def _env(setting):
    """``"A=1;B=2"`` -> ``{"A": "1", "B": "2"}`` (a candidate not in `CANDIDATES`)."""
    try:
        return dict(part.split("=", 1) for part in setting.split(";"))
    except ValueError:
        raise SystemExit(f"wait_policy.py: unknown candidate {setting!r}: not one of "
                         f"{', '.join(CANDIDATES)}, nor VAR=VALUE") from None


def _x(v):
    return "" if v is None else f"{v:.2f}x"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the step counts (a quick check: 0.1)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help="comma-separated, any of: " + ", ".join(CANDIDATES)
                        + "; or other settings VAR=VALUE[;VAR=VALUE]")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--loads", default="idle,loaded")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    candidates = {c: CANDIDATES[c] if c in CANDIDATES else _env(c) for c in args.candidates.split(",")}
    if BASELINE not in candidates:
        candidates = {BASELINE: {}, **candidates}
    workloads = {w: WORKLOADS[w] for w in args.workloads.split(",")}
    loads = tuple(args.loads.split(","))
    steps = {w: max(1, round(STEPS[w] * args.scale)) for w in workloads}
    load0, t0 = os.getloadavg(), time.time()
    results = measure(workloads, steps, candidates, args.rounds, loads,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    load1 = os.getloadavg()
    from fastrnn import cli
    summary = {"rows": summarise(results), "raw": results}
    summary["suggested"] = suggest(summary["rows"])
    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "steps": steps, "rounds": args.rounds, "threads": THREADS,
            "fastrnn_command": (
                "sets " + " ".join(f"{k}={v}" for k, v in cli.BUSY_ENV.items())
                + f" when other processes keep {cli.BUSY_CORES} cores busy as it starts, and "
                "nothing otherwise (`fastrnn.cli.apply_thread_wait_policy`)"),
            "header": [f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"
                       f" ({time.time() - t0:.0f} s)",
                       "command: `python bench/wait_policy.py "
                       + " ".join(sys.argv[1:] if argv is None else argv) + "`",
                       bench.cpu(),
                       f"{args.rounds} rounds; each measurement a fresh process with "
                       f"NUMBA_NUM_THREADS={THREADS} and the caller's environment without "
                       + ", ".join(CONTROLLED),
                       "load average (1/5/15 min) start " + " / ".join(f"{v:.2f}" for v in load0)
                       + ", end " + " / ".join(f"{v:.2f}" for v in load1)]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wait_policy.json").write_text(json.dumps({"info": info, **summary}, indent=1))
    (args.out / "wait_policy.md").write_text(markdown(summary, info))
    print(markdown(summary, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
