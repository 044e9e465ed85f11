"""A training run the reliability tests start as a subprocess (and import for the same data/model).

    python tests/_train_worker.py CHECKPOINT --backend numpy --epochs 4 --every 3

Trains a small model on synthetic data with ``fit(checkpoint=CHECKPOINT, checkpoint_every=N)``:
from scratch when CHECKPOINT does not exist, else resumed with ``SimpleRNNClassifier.load``. Prints
``READY`` before training, ``TRAINING`` after the first step and ``DONE`` at the end (each on its
own line, flushed); exits 130 on KeyboardInterrupt.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

V, D, H, C = 40, 6, 8, 2
N, T, BATCH = 96, 12, 8          # 12 steps per epoch


def make_data(seed=0, n=N, t=T, v=V):
    """Token ids ``(n, t)`` left-padded with 0, and labels that depend on the tokens."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, v, size=(n, t))
    lengths = rng.integers(t // 2, t + 1, size=n)
    x[np.arange(t)[None, :] < (t - lengths)[:, None]] = 0
    y = ((x[:, -1] + x[:, -2]) % 2).astype(np.int64)
    return x, y


def make_model(backend="numpy", seed=7, **kwargs):
    from fastrnn import Adam, SimpleRNNClassifier
    kwargs.setdefault("optimizer", Adam(learning_rate=0.01))
    kwargs.setdefault("dtype", "float64")
    return SimpleRNNClassifier(V, D, H, C, backend=backend, seed=seed, **kwargs)


def fit(model, checkpoint=None, epochs=4, every=None, callbacks=None):
    """Train to epoch ``epochs``, continuing the model's own run (a resumed checkpoint)."""
    x, y = make_data()
    return model.fit(x, y, epochs=epochs, initial_epoch=model.epoch, batch_size=BATCH,
                     checkpoint=checkpoint,
                     checkpoint_every=every, verbose=0, callbacks=callbacks)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--every", type=int, default=None)
    args = p.parse_args(argv)

    from fastrnn import SimpleRNNClassifier
    from fastrnn.callbacks import Callback

    class Announce(Callback):
        done = False

        def on_batch_end(self, step, logs=None):
            if not self.done:
                self.done = True
                print("TRAINING", flush=True)

    if os.path.exists(args.checkpoint):
        model = SimpleRNNClassifier.load(args.checkpoint, backend=args.backend)
    else:
        model = make_model(args.backend)
    print("READY", flush=True)
    try:
        fit(model, args.checkpoint, args.epochs, args.every, callbacks=[Announce()])
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        return 130
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
