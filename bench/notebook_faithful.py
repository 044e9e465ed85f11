"""The notebook drop-in, faithful: one epoch of the notebook's own code against
``fastrnn.compat.RNN(..., faithful=True)``, side by side in one process.

The notebook's setting: 10,000 train / 5,000 test sequences of 40 steps of 128-d dense float64
inputs, hidden 32, batch 16 (625 batches), truncate 4, Adam, ``np.random.seed(10)``. One epoch is
``trains(..., nepoch=1)``: the 625 training steps and then, as the notebook does after epoch 1 and
every 10th, the evaluation of the whole train and test sets. Each round runs one such epoch of
every contender, in a rotating order; the report gives medians over the rounds of the whole epoch
and of its training part (the notebook's: until its ``loss_and_acc`` starts),
and the speed-ups as medians of the per-round ratios against the notebook as it runs by default
(NumPy's BLAS on all cores). The notebook with BLAS on one thread is timed too, since fastrnn's
faithful mode trains with BLAS on one thread. Every model starts from ``np.random.seed(10)`` and
trains one epoch per round, so each round also checks that the faithful runs print the notebook's
log lines and log its numbers (the largest relative difference is reported). The notebook's code is the test oracle
``notebook_rnn.py`` from ``--notebook-dir`` / ``$FASTRNN_NOTEBOOK_DIR`` / ``../shared/notebook``.

    python bench/notebook_faithful.py --rounds 5          # [--data-dir ../shared/data/imdb]

Without ``--data-dir`` (or ``$FASTRNN_DATA_DIR``) the inputs are seeded normal numbers (x 0.25);
with it, the IMDB reviews as ``fastrnn.compat.notebook_data`` builds them. Speed does not depend on
which.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_notebook(directory=None):
    directory = directory or os.environ.get("FASTRNN_NOTEBOOK_DIR") or os.path.join(
        ROOT, os.pardir, "shared", "notebook")
    path = os.path.join(directory, "notebook_rnn.py")
    if not os.path.isfile(path):
        sys.exit(f"notebook_faithful: no notebook_rnn.py in {os.path.normpath(directory)} "
                 "(pass --notebook-dir or set FASTRNN_NOTEBOOK_DIR)")
    spec = importlib.util.spec_from_file_location("notebook_rnn_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_data(data_dir, dtype, n_train=10000, n_test=5000, T=40, D=128):
    if data_dir:
        from fastrnn.compat import notebook_data
        (X, Y), (Xt, Yt) = notebook_data(data_dir, n_train, n_test, maxlen=T, word_dim=D)
        return X.astype(dtype), Y, Xt.astype(dtype), Yt
    rng = np.random.default_rng(0)
    X = (0.25 * rng.standard_normal((n_train + n_test, T, D))).astype(dtype)
    Y = (X[:, -4:, :8].sum(axis=(1, 2)) > 0).astype(np.int64)
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("FASTRNN_DATA_DIR"))
    parser.add_argument("--notebook-dir", default=None)
    parser.add_argument("--backends", default="numpy,numba")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                        help="dtype of the inputs (the maths is float64 either way)")
    parser.add_argument("--threads", type=int, default=1,
                        help="Numba threads for backend numba (default 1: batches of 16 "
                             "gain nothing from two)")
    args = parser.parse_args(argv)

    from fastrnn.compat import RNN
    notebook = load_notebook(args.notebook_dir)
    data = load_data(args.data_dir, args.dtype)
    D, H, k, B = data[0].shape[2], 32, 4, 16

    class Timed(notebook.RNN):
        """The notebook's RNN, unchanged; notes when its evaluation after the epoch starts."""

        def loss_and_acc(self, *args):
            self.evaluation_start = time.perf_counter()
            super().loss_and_acc(*args)
            self.logged = (self.train_loss, self.train_acc, self.test_loss, self.test_acc)

    def notebook_contender(serial):
        from threadpoolctl import threadpool_limits
        notebook.configure(H, B)
        np.random.seed(10)
        theirs = Timed(D, H, k, B, "adam")

        def run():
            with contextlib.ExitStack() as stack:
                if serial:
                    stack.enter_context(threadpool_limits(1, user_api="blas"))
                out = stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                t0 = time.perf_counter()
                theirs.trains(*data, nepoch=1)
                total = time.perf_counter() - t0
            return total, theirs.evaluation_start - t0, out.getvalue(), theirs.logged
        return run

    contenders = {"notebook": notebook_contender(False),
                  "notebook, BLAS on 1 thread": notebook_contender(True)}
    for backend in args.backends.split(","):
        np.random.seed(10)
        mine = RNN(D, H, k, B, "adam", backend=backend, threads=args.threads, faithful=True)
        mine.trains(data[0][:64], data[1][:64], data[2][:16], data[3][:16], nepoch=1,
                    verbose=False)                                      # warm-up (compile)
        np.random.seed(10)
        mine = RNN(D, H, k, B, "adam", backend=backend, threads=args.threads, faithful=True)

        def run(mine=mine):
            with contextlib.redirect_stdout(io.StringIO()) as out:
                t0 = time.perf_counter()
                row = mine.trains(*data, nepoch=1)[0]
                total = time.perf_counter() - t0
            logged = tuple(row[key] for key in ("train_loss", "train_acc", "test_loss", "test_acc"))
            return total, row["seconds"], out.getvalue(), logged
        contenders[f"faithful, {backend}"] = run

    def run_floor():
        """The epoch's 625 input projections ``x_b (640, 128) @ W_xh (128, 32)`` alone, the
        largest product any float64 implementation of this training must compute per batch."""
        from threadpoolctl import threadpool_limits
        W = np.random.default_rng(0).uniform(-0.1, 0.1, (D, H))
        X = np.ascontiguousarray(data[0])
        with threadpool_limits(1, user_api="blas"):
            t0 = time.perf_counter()
            for b0 in range(0, len(X) - B + 1, B):
                X[b0:b0 + B].reshape(-1, D) @ W
            t = time.perf_counter() - t0
        return t, t, None, None

    contenders["floor: the input projections alone"] = run_floor
    times = {name: [] for name in contenders}
    names = list(contenders)
    same_lines, worst = True, 0.0          # every model trained one epoch per round, same seed
    for r in range(args.rounds):
        results = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name] = contenders[name]()
            times[name].append(results[name][:2])
        out, logged = results["notebook"][2:]
        for name, (*_, out2, logged2) in results.items():
            if out2 is not None:
                same_lines &= out2 == out
                worst = max(worst, max(abs(a - b) / abs(b) for a, b in zip(logged2, logged)))
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1][0]:.3f} s ({t[-1][1]:.3f})"
                                             for n, t in times.items())
              + f"; the notebook's log: {out.splitlines()[2:]}", file=sys.stderr)

    import numba
    print(f"# notebook drop-in, faithful: one epoch, {args.rounds} interleaved rounds")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numpy "
          f"{np.__version__}, numba {numba.__version__} ({args.threads} Numba"
          f" threads), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.1f}; inputs: {'IMDB' if args.data_dir else 'random'} "
          f"{data[0].shape} {args.dtype} + {data[2].shape[0]} test\n")
    print("| code | epoch incl. evaluation, s | speed-up | training only, s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    base = times["notebook"]
    for name, t in times.items():
        cells = []
        for i in (0, 1):
            median = statistics.median(x[i] for x in t)
            ratio = statistics.median(b[i] / x[i] for b, x in zip(base, t))
            cells += [f"{median:.3f}", "" if name == "notebook" else f"{ratio:.1f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nLog lines of every contender identical to the notebook's in every round: {same_lines}; "
          f"largest relative difference of a logged value: {worst:.1e}")


if __name__ == "__main__":
    main()
