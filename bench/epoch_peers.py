"""A whole training epoch of Chollet's IMDB model in fastrnn, PyTorch and Keras, in one run.

The data is that of a default ``fastrnn train`` epoch: the 20,000 training reviews left after the
validation split (0.2) of ``imdb.load_data(num_words=10000)``, last 500 tokens, batch 128, float32,
Adam(1e-3), shuffled. The model is Chollet's listing (Embedding(10000, 32) -> SimpleRNN(32) ->
Dense(2)) without masking in all three; fastrnn is also timed with ``mask_zero=True`` (what
``fastrnn train`` runs by default: padding steps cost nothing). Epochs alternate between the
libraries (A B C A B C ...); each library's time is its median, and each ratio the median of the
per-round ratios, so drifting machine speed cancels. Training only: no validation pass.

Keras (3, JAX backend) may live in another environment: ``--keras-python PATH`` runs it there in a
child process that stays up between rounds. Without it (or without torch) that column is left out.

    FASTRNN_DATA_DIR=../shared/data/imdb python bench/epoch_peers.py \\
        --keras-python /path/to/venv/bin/python --rounds 3 --out bench/results
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fastrnn import SimpleRNNClassifier, bench

REVIEWS, MAXLEN, BATCH, LR = 20000, 500, 128, 1e-3

KERAS_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np, keras
with np.load(sys.argv[1]) as f:
    x, y = f["x"], f["y"]
V, D, H, C, batch, lr = (int(v) if float(v).is_integer() else float(v) for v in sys.argv[2:8])
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((x.shape[1],), dtype="int32"), keras.layers.Embedding(V, D),
                          keras.layers.SimpleRNN(H), keras.layers.Dense(C, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x[:batch + 32], y[:batch + 32], batch_size=batch, epochs=1, verbose=0)  # compile both shapes
print(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend()}), flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0)
    print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
"""


class KerasChild:
    """Keras in a child process: ``epoch()`` trains one epoch there and returns its seconds."""

    def __init__(self, python, data):
        s = bench.CHOLLET
        env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"))
        self.proc = subprocess.Popen(
            [python, "-c", KERAS_CHILD, str(data), *map(str, (s.V, s.D, s.H, s.C, BATCH, LR))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._reply()

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Keras child exited ({self.proc.wait()}); run it by hand to see why")
        return json.loads(line)

    def epoch(self):
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keras-python", help="a Python with keras and jax installed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reviews", type=int, default=REVIEWS, help="(fewer for a quick check)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    try:
        torch = bench.import_torch()              # before Numba's OpenMP starts (see import_torch)
    except ImportError:
        torch = None
        print("torch is not installed: its column is left out", file=sys.stderr)
    (x, y), _ = bench.imdb_slices(25000, maxlen=MAXLEN)
    x, y = x[:args.reviews], y[:args.reviews]    # fit(validation_split=0.2) trains on the first 80%

    def fastrnn_epoch(mask_zero):
        s = bench.CHOLLET
        model = SimpleRNNClassifier(s.V, s.D, s.H, s.C, mask_zero=mask_zero, seed=0)
        return lambda xs=x, ys=y: bench.train_epoch("numba", model, xs, ys)

    def torch_epoch():
        step = bench.torch_trainer(bench.fastrnn_model("numpy", "float32").theta, bench.CHOLLET.dims,
                                   lazy=False)
        return lambda xs=x, ys=y: bench.train_epoch("torch", step, xs, ys)

    runners = {"fastrnn": fastrnn_epoch(False), "fastrnn (mask_zero)": fastrnn_epoch(True)}
    if torch is not None:
        runners["torch"] = torch_epoch()
    for run in runners.values():
        run(x[:2 * BATCH], y[:2 * BATCH])     # warm-up: compiled kernels loaded, buffers touched
    info = {"torch": torch.__version__ if torch else None}
    keras = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.keras_python:
            data = Path(tmp) / "data.npz"
            np.savez(data, x=x.astype(np.int32), y=y)
            keras = KerasChild(args.keras_python, data)        # warms up itself
            info.update(keras.info)
            runners["keras"] = keras.epoch
        times = {name: [] for name in runners}
        for r in range(args.rounds):
            for name, run in runners.items():
                t = time.perf_counter()
                seconds = run()                    # Keras reports its own (no pipe round trip)
                times[name].append(seconds if name == "keras" else time.perf_counter() - t)
                print(f"round {r + 1}: {name} {times[name][-1]:.2f} s", file=sys.stderr)
        if keras:
            keras.close()
    result = summary(times, info, len(x))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "epoch_peers.json").write_text(json.dumps(result, indent=1))
    (args.out / "epoch_peers.md").write_text(markdown(result))
    print(markdown(result), end="")
    return 0


def summary(times, info, reviews):
    base = times["fastrnn"]
    rows = {name: {"median_s": statistics.median(t), "all_s": t,
                   "fastrnn_speedup": statistics.median(a / b for a, b in zip(t, base))}
            for name, t in times.items()}
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": bench.machine(), "versions": info, "threads": bench.run_info(),
            "reviews": reviews, "maxlen": MAXLEN, "batch": BATCH, "rows": rows}


def markdown(result):
    title = (f"Whole training epoch, Chollet's IMDB model ({result['reviews']:,} reviews x "
             f"{result['maxlen']} tokens, batch {result['batch']}, float32, Adam), {result['date']}")
    peers = ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v)
    lines = [title, "", *(f"- {line}" for line in result["machine"]), f"- peers: {peers}", "",
             "| library | median s / epoch | time / fastrnn's (median of rounds) |", "|---|---:|---:|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['fastrnn_speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
