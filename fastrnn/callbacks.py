"""Training callbacks with Keras' names and meanings: History, EarlyStopping, ModelCheckpoint."""

from __future__ import annotations

import math


class Callback:
    """Base class. ``model`` is set by ``fit``; ``logs`` hold ``loss``, ``accuracy``, ``val_*``."""

    model = None

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """Per-epoch metrics: ``history["loss"][e]``, ``history["val_accuracy"][e]``, ...; ``epoch``
    lists the epoch indices."""

    def __init__(self):
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


def _mode(mode, monitor):
    """"min" or "max" for ``mode`` ("auto": max for accuracies, min otherwise, as Keras)."""
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


def _better(mode):
    return (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs
    (Keras 3: ``patience=2`` stops after the second epoch in a row without improvement; 0 and 1
    both stop after the first). With ``restore_best_weights`` the model ends training, stopped
    early or not, with the weights of its best epoch."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto",
                 restore_best_weights=False):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        self.monitor, self.min_delta, self.patience = monitor, abs(min_delta), patience
        self.restore_best_weights = restore_best_weights
        self.mode = _mode(mode, monitor)
        self._better = _better(self.mode)
        self.sign = 1 if self.mode == "max" else -1

    def on_train_begin(self, logs=None):
        self.wait, self.best, self.best_weights = 0, None, None
        self.best_epoch = self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which the logs do not have "
                             f"(available: {sorted(logs or {})}); give validation data for val_*")
        self.wait += 1
        if self.best is None or self._better(value - self.sign * self.min_delta, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (atomically) after every epoch, or every ``save_freq`` optimizer steps when
    it is an integer; with ``save_best_only`` (per epoch) only when ``monitor`` improves.
    ``filepath`` may contain ``{epoch}`` (1-based) and any log name, e.g.
    ``"model-{epoch:02d}-{val_loss:.3f}.npz"``."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto",
                 save_freq="epoch"):
        if save_freq != "epoch" and not (isinstance(save_freq, int)
                                         and not isinstance(save_freq, bool) and save_freq > 0):
            raise ValueError(f"save_freq must be 'epoch' or a positive integer, got {save_freq!r}")
        self.filepath, self.monitor, self.save_best_only = str(filepath), monitor, save_best_only
        self.save_freq = save_freq
        self._better = _better(_mode(mode, monitor))
        self.best = None
        self._last_step = None

    def _path(self, epoch, logs):
        try:
            return self.filepath.format(epoch=epoch, **logs)
        except (KeyError, IndexError) as e:
            raise KeyError(f"ModelCheckpoint filepath {self.filepath!r} names {e}, which the logs "
                           f"do not have (available: epoch, {', '.join(sorted(logs))})") from None

    def on_batch_end(self, step, logs=None):
        # a skipped (non-finite) batch does not advance ``step``: save once per step
        if (self.save_freq != "epoch" and step > 0 and step % self.save_freq == 0
                and step != self._last_step):
            self._last_step = step
            self.model.save(self._path(self.model.epoch + 1, logs or {}))

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq != "epoch":
            return
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return
            if self.best is not None and not self._better(value, self.best):
                return
            self.best = value
        self.model.save(self._path(epoch + 1, logs))
