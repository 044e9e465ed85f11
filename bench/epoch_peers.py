"""A whole training epoch of Chollet's IMDB model in fastrnn, PyTorch and Keras, in one run.

The data is that of a default ``fastrnn train`` epoch: the 20,000 training reviews left after the
validation split (0.2) of ``imdb.load_data(num_words=10000)``, last 500 tokens, batch 128, float32,
Adam(1e-3), shuffled. The model is Chollet's listing (Embedding(10000, 32) -> SimpleRNN(32) ->
Dense(2)) without masking in all three; fastrnn is also timed with ``mask_zero=True`` (what
``fastrnn train`` runs by default: padding steps cost nothing). Epochs alternate between the
libraries (A B C A B C ...); each library's time is its median, and each ratio the median of the
per-round ratios, so drifting machine speed cancels. Training only: no validation pass.

Each peer runs in a child process of its own that stays up between rounds, with the caller's
environment (no OpenMP runtime or setting of fastrnn's reaches it): PyTorch with this Python and
fastrnn's thread count, Keras (3, JAX backend) in another environment with ``--keras-python PATH``.
Without it (or without torch) that column is left out.

    FASTRNN_DATA_DIR=../shared/data/imdb python bench/epoch_peers.py \\
        --keras-python /path/to/venv/bin/python --rounds 3 --out bench/results
"""

import argparse
import datetime
import json
import os
import statistics
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


TORCH_CHILD = r"""
import json, sys, time
try:
    import torch  # first: before anything else loads an OpenMP runtime
except ImportError as e:
    print(json.dumps({"error": f"torch is not installed ({e})"}), flush=True)
    sys.exit(0)
import numpy as np
from fastrnn import bench
bench.import_torch(int(sys.argv[2]))
with np.load(sys.argv[1]) as f:
    x, y = f["x"], f["y"]
batch = int(sys.argv[3])
step = bench.torch_trainer(bench.fastrnn_model("numpy", "float32").theta, bench.CHOLLET.dims,
                           lazy=False)
bench.train_epoch("torch", step, x[:2 * batch], y[:2 * batch], batch)   # warm-up
print(json.dumps({"torch": f"{torch.__version__} ({torch.get_num_threads()} threads)"}), flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    bench.train_epoch("torch", step, x, y, batch)
    print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
"""


class PeerChild(bench.ChildProcess):
    """A peer library in a child process (`KERAS_CHILD`, `TORCH_CHILD`), with the caller's
    environment: ``epoch()`` trains one epoch there and returns its seconds (measured there, so
    without the pipe's round trip). ``info`` is its first line (``"error"`` if it cannot run)."""

    def __init__(self, name, python, code, args, env=None):
        super().__init__(name, [python, "-c", code, *map(str, args)], env)

    def epoch(self):
        return self.request("epoch")["seconds"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keras-python", help="a Python with keras and jax installed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reviews", type=int, default=REVIEWS, help="(fewer for a quick check)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    (x, y), _ = bench.imdb_slices(25000, maxlen=MAXLEN)
    x, y = x[:args.reviews], y[:args.reviews]    # fit(validation_split=0.2) trains on the first 80%

    def fastrnn_epoch(mask_zero):
        s = bench.CHOLLET
        model = SimpleRNNClassifier(s.V, s.D, s.H, s.C, mask_zero=mask_zero, seed=0)
        return lambda xs=x, ys=y: bench.train_epoch("numba", model, xs, ys)

    runners = {"fastrnn": fastrnn_epoch(False), "fastrnn (mask_zero)": fastrnn_epoch(True)}
    info, children = {"torch": None}, []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, x=x.astype(np.int32), y=y)
        try:
            # the peers in their own processes: no OpenMP runtime or setting of fastrnn's reaches them
            import numba
            torch = PeerChild("torch", sys.executable, TORCH_CHILD,
                              (data, numba.get_num_threads(), BATCH))
            children.append(torch)
            if "error" in torch.info:
                print(f"{torch.info['error']}: its column is left out", file=sys.stderr)
            else:
                info.update(torch.info)
                runners["torch"] = torch.epoch
            if args.keras_python:
                s = bench.CHOLLET
                keras = PeerChild("Keras", args.keras_python, KERAS_CHILD,
                                  (data, s.V, s.D, s.H, s.C, BATCH, LR),
                                  env=dict(os.environ,
                                           KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax")))
                children.append(keras)                          # it warms up itself
                info.update(keras.info)
                runners["keras"] = keras.epoch
            for name in ("fastrnn", "fastrnn (mask_zero)"):
                runners[name](x[:2 * BATCH], y[:2 * BATCH])     # warm-up: kernels loaded, buffers touched
            times = {name: [] for name in runners}
            for r in range(args.rounds):
                for name, run in runners.items():
                    t = time.perf_counter()
                    seconds = run()                # a child reports its own (no pipe round trip)
                    times[name].append(seconds if name in ("torch", "keras")
                                       else time.perf_counter() - t)
                    print(f"round {r + 1}: {name} {times[name][-1]:.2f} s", file=sys.stderr)
        finally:
            for child in children:
                child.close()
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
    lines = [title, "", *(f"- {line}" for line in result["machine"]),
             f"- peers: {peers}; each in a process of its own, with this command's environment", "",
             "| library | median s / epoch | time / fastrnn's (median of rounds) |", "|---|---:|---:|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['fastrnn_speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
