"""The ``fastrnn`` command: ``train``, ``evaluate``, ``predict`` and ``bench`` on IMDB reviews.

::

    fastrnn train                      # Chollet's IMDB SimpleRNN listing: 0.853 test accuracy
    fastrnn evaluate fastrnn-imdb.npz
    fastrnn predict fastrnn-imdb.npz "A wonderful film." "Dull and far too long."
    fastrnn bench --help

A thin layer: argument parsing, loading data, printing. Training, evaluation, checkpoints and
progress bars all come from :class:`fastrnn.SimpleRNNClassifier`. ``main(argv)`` returns the exit
status: 0 on success, 1 if training fails (non-finite loss), 2 for a usage or input error (one
line ``fastrnn: error: ...`` on stderr), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import shlex
import sys
import time
import warnings

PROG = "fastrnn"
DEFAULT_OUTPUT = "fastrnn-imdb.npz"
DEFAULT_NUM_WORDS = 10000
DEFAULT_MAXLEN = 500


class UsageError(Exception):
    """A bad command line or input: printed as one ``fastrnn: error: ...`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` only for real values (not None or an off switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.help is None:
            return action.help
        return super()._get_help_string(action)


# ------------------------------------------------------------------------------------------------
# argument types
# ------------------------------------------------------------------------------------------------

def _int_type(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _float_type(low, high=math.inf, low_open=False, high_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if low_open else value >= low)
                and (value < high if high_open else value <= high)):
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value
    return parse


positive_int, nonnegative_int = _int_type(1), _int_type(0)
positive_float = _float_type(0, low_open=True)
nonnegative_float = _float_type(0)
fraction = _float_type(0, 1)


# ------------------------------------------------------------------------------------------------
# the parser
# ------------------------------------------------------------------------------------------------

def build_parser():
    """The ``fastrnn`` argument parser (subcommands train, evaluate, predict, bench)."""
    parser = _Parser(prog=PROG, description="Train and use SimpleRNN sentiment classifiers on "
                     "IMDB reviews, at compiled speed.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser(
        "train", help="train a classifier on IMDB (defaults: Chollet's SimpleRNN listing)",
        description="Train Embedding -> SimpleRNN -> Dense on the IMDB reviews. Prints the test "
        "accuracy of the weights from the best-validation epoch (lowest val_loss), which is "
        "also what --output holds.",
        formatter_class=_Formatter)
    data = train.add_argument_group("data")
    _data_dir_arg(data)
    data.add_argument("--num-words", type=nonnegative_int, default=None, metavar="N",
                      help=f"vocabulary: keep the N most frequent words (default "
                      f"{DEFAULT_NUM_WORDS}, or the resumed model's); 0 = all")
    data.add_argument("--maxlen", type=positive_int, default=None, metavar="T",
                      help=f"keep the last T tokens of each review, left-pad shorter ones "
                      f"(default {DEFAULT_MAXLEN}, or the resumed model's)")
    data.add_argument("--limit", type=positive_int, default=None, metavar="N",
                      help="use only the first N train and first N test reviews (quick runs)")
    model = train.add_argument_group("model")
    model.add_argument("--embed-dim", type=positive_int, default=32, metavar="D",
                       help="embedding size")
    model.add_argument("--hidden-dim", type=positive_int, default=32, metavar="H",
                       help="hidden units")
    model.add_argument("--bptt-truncate", type=positive_int, default=None, metavar="K",
                       help="backpropagate through the last K steps only (default: all)")
    model.add_argument("--mask-zero", action=argparse.BooleanOptionalAction, default=True,
                       help="skip padding: carry the state over token 0, as Keras' mask_zero "
                            "(default on)")
    model.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="dtype of every buffer")
    _backend_args(model)
    model.add_argument("--lazy-embedding", action="store_true",
                       help="update only the embedding rows present in each batch")
    opt = train.add_argument_group("optimizer")
    opt.add_argument("--optimizer", choices=("adam", "adamw", "rmsprop", "sgd"), default="rmsprop",
                     help="RMSprop as in Chollet's listing (it beat Adam on validation accuracy "
                     "at 3 epochs, mean of 3 seeds: 0.837 vs 0.824); Adam is bias-corrected")
    opt.add_argument("--learning-rate", type=positive_float, default=None, metavar="LR",
                     help="default: the optimizer's (1e-3 for adam/adamw/rmsprop, 1e-2 for sgd)")
    opt.add_argument("--clipnorm", type=positive_float, default=None, metavar="C",
                     help="clip the gradient by global L2 norm")
    opt.add_argument("--weight-decay", type=nonnegative_float, default=None, metavar="WD",
                     help="decoupled weight decay (adamw only; default 0.01)")
    opt.add_argument("--momentum", type=fraction, default=None, metavar="M",
                     help="momentum (sgd only; default 0)")
    fit = train.add_argument_group("training")
    fit.add_argument("--batch-size", type=positive_int, default=128, metavar="B",
                     help="reviews per optimizer step")
    fit.add_argument("--epochs", type=nonnegative_int, default=10, metavar="N",
                     help="total epochs (a resumed model continues up to this number)")
    fit.add_argument("--validation-split", type=fraction, default=0.2, metavar="F",
                     help="hold out this last fraction of the training reviews for validation")
    fit.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    fit.add_argument("--patience", type=nonnegative_int, default=None, metavar="N",
                     help="stop when val_loss has not improved for N epochs (default: train all "
                     "epochs; the best-validation weights are kept either way)")
    files = train.add_argument_group("files")
    files.add_argument("--output", "-o", default=DEFAULT_OUTPUT, metavar="PATH",
                       help="where to save the model (the best-validation epoch's weights)")
    files.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="save the full training state here after every epoch and on Ctrl-C "
                       "(default: OUTPUT with .ckpt.npz, removed after a successful run)")
    files.add_argument("--resume", default=None, metavar="PATH",
                       help="continue training from a checkpoint (or a saved model)")
    train.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bars or per-epoch lines; print only the result")
    train.add_argument("--json", action="store_true",
                       help="print the result as one JSON object (last line)")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate", help="loss and accuracy of a saved model on the IMDB test reviews",
        description="Evaluate a saved model on the 25,000 IMDB test reviews, encoded with the "
        "model's vocabulary and sequence length.")
    evaluate.add_argument("model", metavar="MODEL", help="a model file saved by 'fastrnn train'")
    _data_dir_arg(evaluate)
    _backend_args(evaluate)
    evaluate.add_argument("--batch-size", type=positive_int, default=256, metavar="B")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict", help="sentiment of raw review texts",
        description="Print the probability that each review is positive, and its label. The "
        "texts are tokenised and encoded as the IMDB data was (needs imdb_word_index.json).")
    predict.add_argument("model", metavar="MODEL", help="a model file saved by 'fastrnn train'")
    predict.add_argument("texts", metavar="TEXT", nargs="+",
                         help="review texts; '-' reads one review per line from stdin")
    _data_dir_arg(predict, what="imdb_word_index.json")
    _backend_args(predict)
    predict.add_argument("--json", action="store_true", help="print a JSON list")
    predict.set_defaults(func=cmd_predict)

    lm = sub.add_parser("lm", help="language models: train on a corpus, generate text",
                        description="Word- or character-level SimpleRNN language models trained "
                        "with truncated BPTT over parallel streams (the state carried from window "
                        "to window, the gradient stopped at each window).")
    lm_sub = lm.add_subparsers(dest="lm_command", metavar="COMMAND", required=True)
    lm_train = lm_sub.add_parser(
        "train", help="train a language model", formatter_class=_Formatter,
        description="Train Embedding -> SimpleRNN x L (stateful, sequence outputs) -> Dense(V) "
        "with softmax cross-entropy on windows of --bptt steps of --batch-size parallel streams. "
        "Prints loss, validation perplexity and tokens/s per epoch; saves the model (with its "
        "vocabulary) to --output after every epoch.")
    lm_train.add_argument("--corpus", required=True, metavar="NAME|PATH",
                          help="imdb (the raw reviews), tinyshakespeare, or a UTF-8 text file")
    lm_train.add_argument("--level", choices=("word", "char"), default="char")
    lm_train.add_argument("--data-dir", default=None, metavar="DIR",
                          help="directory holding the named corpus (default: $FASTRNN_DATA_DIR "
                          "and its sibling directories)")
    lm_train.add_argument("--num-words", type=positive_int, default=10000, metavar="N",
                          help="word level: vocabulary size, <unk> and <eos> included")
    lm_train.add_argument("--embed-dim", type=positive_int, default=64, metavar="D")
    lm_train.add_argument("--hidden-dim", type=positive_int, default=256, metavar="H")
    lm_train.add_argument("--layers", type=positive_int, default=1, metavar="L")
    lm_train.add_argument("--dropout", type=_float_type(0, 1), default=0.0, metavar="P",
                          help="dropout after the embedding and each recurrent layer")
    lm_train.add_argument("--batch-size", type=positive_int, default=50, metavar="B")
    lm_train.add_argument("--bptt", type=positive_int, default=50, metavar="K",
                          help="window length: the gradient goes back at most K steps")
    lm_train.add_argument("--epochs", type=positive_int, default=1, metavar="E")
    lm_train.add_argument("--learning-rate", type=_float_type(0, low_open=True), default=2e-3,
                          metavar="LR", help="Adam's learning rate")
    lm_train.add_argument("--clipnorm", type=_float_type(0, low_open=True), default=5.0,
                          metavar="C", help="global gradient-norm clipping")
    lm_train.add_argument("--limit", type=positive_int, default=None, metavar="N",
                          help="use only the first N tokens of the training stream")
    lm_train.add_argument("--output", default="lm.npz", metavar="PATH")
    lm_train.add_argument("--seed", type=nonnegative_int, default=0)
    _backend_args(lm_train)
    lm_train.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    lm_train.set_defaults(func=cmd_lm_train)
    lm_gen = lm_sub.add_parser("generate", help="continue a prompt with a trained model")
    lm_gen.add_argument("model", metavar="MODEL", help="a model saved by 'fastrnn lm train'")
    lm_gen.add_argument("--prompt", required=True)
    lm_gen.add_argument("--length", type=nonnegative_int, default=200, metavar="N")
    lm_gen.add_argument("--temperature", type=_float_type(0), default=1.0, metavar="T",
                        help="0: the most likely token every time")
    lm_gen.add_argument("--top-k", type=positive_int, default=None, metavar="K")
    lm_gen.add_argument("--seed", type=nonnegative_int, default=None)
    _backend_args(lm_gen)
    lm_gen.set_defaults(func=cmd_lm_generate)

    sub.add_parser("bench", add_help=False, help="benchmarks (all arguments go to fastrnn.bench; "
                   "see 'fastrnn bench --help')")
    return parser


def _data_dir_arg(group, what="imdb.npz"):
    group.add_argument("--data-dir", default=None, metavar="DIR",
                       help=f"directory holding {what} (default: $FASTRNN_DATA_DIR, then the "
                       "cache directory, then download)")


def _backend_args(group):
    group.add_argument("--backend", choices=("numba", "numpy"), default="numba",
                       help="compiled kernels, or the NumPy reference (same maths, slower)")
    group.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="Numba threads (default: all cores)")


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------

# How the `fastrnn` program's OpenMP worker threads wait between parallel regions, chosen by
# measurement (`python bench/wait_policy.py`, bench/results/wait_policy.md: a training step under
# each setting, idle and with one core busy). No one setting serves both: libgomp's default spin
# (~300,000 iterations, milliseconds) is fastest idle but collapses when another process holds a
# core (the default `fastrnn train` took 136 s instead of 28 s), and OMP_WAIT_POLICY=PASSIVE (sleep
# at once) never collapses but makes every region pay a wake-up (the notebook step 1.5x slower
# idle); a short spin (GOMP_SPINCOUNT=10000) sits between them and has the costs of both. So the
# program looks first: when other processes keep at least BUSY_CORES of the cores busy as it starts
# it sleeps at once (PASSIVE), otherwise it leaves libgomp's default, as any program using the
# library gets it.
BUSY_CORES, BUSY_ENV = 0.5, {"OMP_WAIT_POLICY": "PASSIVE"}


def busy_cores(interval=0.05):
    """How many cores other processes keep busy right now, from two readings of ``/proc/stat``
    ``interval`` seconds apart (this process waits meanwhile); None where it cannot be read."""
    def read():
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]              # all, idle + iowait
    try:
        total0, idle0 = read()
        time.sleep(interval)
        total1, idle1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def apply_thread_wait_policy(environ=os.environ, busy=None):
    """Put `BUSY_ENV` into ``environ`` when ``busy()`` (default `busy_cores`) finds at least
    `BUSY_CORES` cores busy, unless the caller chose a wait policy already (``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` set). libgomp reads them once, when Numba's OpenMP threads start: before
    the first kernel runs."""
    if any(k in environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
        return
    load = (busy or busy_cores)()
    if load is not None and load >= BUSY_CORES:
        environ.update(BUSY_ENV)


def main(argv=None):
    """Run the ``fastrnn`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Run as a program (``argv=None``), ``train``, ``evaluate`` and ``predict`` choose how threads
    wait for work by the machine's load (`apply_thread_wait_policy`). ``bench`` does not: it
    times the library as any program gets it, like ``python -m fastrnn.bench`` and
    pytest-benchmark.
    """
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:                   # everything after "bench" belongs to fastrnn.bench
        return _run(cmd_bench, argv[1:])
    if program:
        apply_thread_wait_policy()
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        return _fail(e)
    except SystemExit as e:                     # --help / --version
        return _exit_code(e.code)
    args.argv = argv
    return _run(args.func, args)


def _run(func, args):
    from .datasets.imdb import DataNotFoundError
    from .model import TrainingError
    try:
        return func(args)
    except UsageError as e:
        return _fail(e)
    except DataNotFoundError as e:
        return _fail(f"{e} Or pass --data-dir DIR.")
    except TrainingError as e:
        _fail(e)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _fail(error):
    message = " ".join(str(error).split())      # one line, however the message was wrapped
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _exit_code(code):
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _data_path(data_dir, fname="imdb.npz"):
    """``--data-dir`` as the loaders' ``path``; an explicit directory must hold the file (the
    loaders would otherwise fall back silently to another copy)."""
    if data_dir is None:
        return None
    if os.path.isdir(data_dir):
        if not os.path.isfile(os.path.join(data_dir, fname)):
            raise UsageError(f"--data-dir {data_dir!r} has no {fname}")
        return data_dir
    if os.path.isfile(data_dir) and os.path.basename(data_dir) == fname:
        return data_dir
    raise UsageError(f"--data-dir {data_dir!r} is not a directory")


def _load_model(path, args):
    from .model import SimpleRNNClassifier
    try:
        return SimpleRNNClassifier.load(path, backend=args.backend, threads=args.threads)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def _token_model(model, path, what):
    if model.config["vocab_size"] is None:
        raise UsageError(f"{path!r} reads dense inputs, not IMDB token ids; it cannot {what}")
    if model.config["maxlen"] is None:
        raise UsageError(f"{path!r} was never trained, so its sequence length is unknown")


def _load_imdb(data_dir, num_words, maxlen, splits=("train", "test"), limit=None):
    """``{split: (ids (N, maxlen) int32, labels (N,))}`` from ``imdb.load_data(num_words)``,
    the first ``limit`` reviews of each split."""
    from .datasets import imdb
    from .preprocessing import pad_sequences
    try:
        train, test = imdb.load_data(path=_data_path(data_dir), num_words=num_words or None)
    except ValueError as e:                     # a damaged or unsafe data file
        raise UsageError(str(e)) from None
    data = dict(zip(("train", "test"), (train, test)))
    return {s: (pad_sequences(data[s][0][:limit], maxlen=maxlen), data[s][1][:limit])
            for s in splits}


def _optimizer(args):
    from . import optim
    if args.weight_decay is not None and args.optimizer != "adamw":
        raise UsageError("--weight-decay applies to --optimizer adamw only")
    if args.momentum is not None and args.optimizer != "sgd":
        raise UsageError("--momentum applies to --optimizer sgd only")
    config = {"name": args.optimizer, "global_clipnorm": args.clipnorm}
    if args.learning_rate is not None:
        config["learning_rate"] = args.learning_rate
    if args.weight_decay is not None:
        config["weight_decay"] = args.weight_decay
    if args.momentum is not None:
        config["momentum"] = args.momentum
    return optim.get(config)


def _resume_command(args, checkpoint):
    """The command line that continues this run from ``checkpoint``."""
    argv, skip = [], False
    for a in args.argv:
        if skip:
            skip = False
        elif a in ("--resume", "--checkpoint"):
            skip = True
        elif not a.startswith(("--resume=", "--checkpoint=")):
            argv.append(a)
    return shlex.join([PROG, *argv, "--resume", checkpoint])


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------

def cmd_train(args):
    """``fastrnn train``: fit, keep the best-validation weights in --output, report test metrics."""
    with contextlib.ExitStack() as locks:       # the files it writes, locked until it ends
        _check_train_paths(args, locks)
        return _train(args)


def _train(args):
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    output = args.output
    model, num_words, maxlen, checkpoint = None, args.num_words, args.maxlen, args.checkpoint
    if args.resume:
        model = _load_model(args.resume, args)
        _token_model(model, args.resume, "be trained on IMDB")
        for flag, given, have in (("--num-words", num_words, model.config["vocab_size"]),
                                  ("--maxlen", maxlen, model.config["maxlen"])):
            if given not in (None, have):
                raise UsageError(f"{flag} {given} does not match the resumed model's {have}")
        num_words, maxlen = model.config["vocab_size"], model.config["maxlen"]
        if not _same_file(args.resume, output):     # go on writing the resumed checkpoint
            checkpoint = checkpoint or args.resume
        say(f"resuming {args.resume}: {model.epoch} epoch(s) done, training to {args.epochs}")
    implicit = checkpoint is None               # removed after a successful run
    checkpoint = checkpoint or _ckpt_path(output)
    num_words = DEFAULT_NUM_WORDS if num_words is None else num_words
    maxlen = maxlen or DEFAULT_MAXLEN
    data = _load_imdb(args.data_dir, num_words, maxlen, limit=args.limit)
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    if model is None:
        vocab = num_words or int(max(x_train.max(), x_test.max())) + 1      # 0: all words
        model = _new_model(args, vocab)
    say(f"{len(x_train):,} train / {len(x_test):,} test reviews, vocabulary "
        f"{model.config['vocab_size']:,}, last {maxlen} tokens; {model!r}")
    if not args.quiet:
        _compile_notice(model)

    epochs_before = model.epoch
    start = time.perf_counter()
    try:
        history = model.fit(x_train, y_train, epochs=args.epochs, initial_epoch=model.epoch,
                            batch_size=args.batch_size,
                            validation_split=args.validation_split,
                            callbacks=_callbacks(args, model, output),
                            verbose=0 if args.quiet else 1, checkpoint=checkpoint).history
    except KeyboardInterrupt:
        if os.path.exists(checkpoint):
            print(f"{PROG}: interrupted; the training state is in {checkpoint}\n"
                  f"resume with: {_resume_command(args, checkpoint)}", file=sys.stderr, flush=True)
        else:                                   # a second Ctrl-C before anything was saved
            print(f"{PROG}: interrupted before a checkpoint was saved", file=sys.stderr)
        return 130
    except ValueError as e:                     # e.g. a validation split that leaves nothing
        raise UsageError(str(e)) from None
    seconds = time.perf_counter() - start
    epochs_run = model.epoch - epochs_before

    validate = args.validation_split > 0
    if validate and (epochs_run or args.resume) and os.path.exists(output):
        best = _load_model(output, args)        # the best-validation epoch, saved by _callbacks
    else:
        model.save(output)
        best = model
    test = best.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    if implicit and os.path.exists(checkpoint):
        os.remove(checkpoint)
    result = {"test_loss": test["loss"], "test_accuracy": test["accuracy"],
              "n_test": int(len(y_test)), "best_epoch": best.epoch,
              "epochs": len(history.get("loss", [])), "epochs_this_run": epochs_run,
              "train_seconds": seconds, "output": output,
              "checkpoint": checkpoint if os.path.exists(checkpoint) else None}
    if validate and best.epoch:
        result["val_loss"] = history["val_loss"][best.epoch - 1]
        result["val_accuracy"] = history["val_accuracy"][best.epoch - 1]
    if args.json:
        print(json.dumps(result))
        return 0
    if "val_loss" in result:
        print(f"best epoch {best.epoch}/{result['epochs']}: val_loss {result['val_loss']:.4f}, "
              f"val_accuracy {result['val_accuracy']:.4f}")
    print(f"test (epoch {best.epoch}, {len(y_test):,} reviews): loss {test['loss']:.4f}, "
          f"accuracy {test['accuracy']:.4f}")
    print(f"train time: {seconds:.1f} s for {epochs_run} epoch(s), validation included")
    print(f"saved: {output}")
    if result["checkpoint"]:
        print(f"training state (last epoch): {checkpoint}")
    return 0


def _check_train_paths(args, locks):
    """Before any work: the files ``train`` writes are writable, not directories, and not being
    written by another run (their locks go into ``locks``, held until the command ends)."""
    from ._io import exclusive
    if args.patience is not None and not args.validation_split:
        raise UsageError("--patience needs validation data (--validation-split > 0)")
    if args.checkpoint and _same_file(args.checkpoint, args.output):
        raise UsageError("--checkpoint must differ from --output (which keeps the best epoch)")
    for flag, path in (("--output", args.output), ("--checkpoint", args.checkpoint)):
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder and not os.path.isdir(folder):
            raise UsageError(f"{flag} {path!r}: directory {folder!r} does not exist")
    resumed = args.resume and not _same_file(args.resume, args.output)    # written on (train)
    checkpoint = args.checkpoint or (args.resume if resumed else _ckpt_path(args.output))
    for flag, path in (("--output", args.output), ("--checkpoint", checkpoint)):
        try:
            locks.enter_context(exclusive(path))
        except OSError as e:
            raise UsageError(f"{flag}: {e.strerror or e}") from None


def _new_model(args, vocab):
    from .model import SimpleRNNClassifier
    try:
        return SimpleRNNClassifier(
            vocab, args.embed_dim, args.hidden_dim, num_classes=2,
            bptt_truncate=args.bptt_truncate, mask_zero=args.mask_zero, dtype=args.dtype,
            backend=args.backend, optimizer=_optimizer(args), seed=args.seed,
            lazy_embedding=args.lazy_embedding, threads=args.threads)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def _callbacks(args, model, output):
    """Save the best-validation epoch (lowest val_loss) to ``output``; early stopping."""
    from .callbacks import EarlyStopping, ModelCheckpoint
    if not args.validation_split:
        return []
    best = ModelCheckpoint(output, monitor="val_loss", save_best_only=True)
    done = model.history.history.get("val_loss", [])
    if args.resume and done and os.path.exists(output):
        best.best = min(done)                   # the interrupted run saved that epoch there
    if args.patience is None:
        return [best]
    return [best, EarlyStopping(monitor="val_loss", patience=args.patience)]


def _compile_notice(model):
    """Say on stderr when the first use of the kernels will compile them (a silent pause else)."""
    if model.backend_name == "numba":
        from . import kernels
        if not kernels.is_compiled(model.dtype):
            print(f"{PROG}: compiling the {model.dtype.name} kernels (first use on this machine, "
                  "about 10 s; cached on disk afterwards)", file=sys.stderr, flush=True)


def _same_file(a, b):
    return os.path.abspath(a) == os.path.abspath(b)


def _ckpt_path(output):
    root, ext = os.path.splitext(output)
    return root + ".ckpt" + (ext or ".npz")


def cmd_evaluate(args):
    """``fastrnn evaluate MODEL``: loss and accuracy on the IMDB test reviews."""
    model = _load_model(args.model, args)
    _token_model(model, args.model, "be evaluated on IMDB")
    vocab, maxlen = model.config["vocab_size"], model.config["maxlen"]
    x, y = _load_imdb(args.data_dir, vocab, maxlen, splits=("test",))["test"]
    _compile_notice(model)
    result = model.evaluate(x, y, batch_size=args.batch_size, verbose=0, return_dict=True)
    if args.json:
        print(json.dumps({"model": args.model, "loss": result["loss"],
                          "accuracy": result["accuracy"], "n": int(len(y)),
                          "num_words": vocab, "maxlen": maxlen}))
    else:
        print(f"{args.model}: test loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f} "
              f"({len(y):,} reviews, vocabulary {vocab:,}, last {maxlen} tokens)")
    return 0


def cmd_predict(args):
    """``fastrnn predict MODEL TEXT...``: probability of a positive review, and the label."""
    texts = []
    for text in args.texts:
        if text == "-":
            texts.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            texts.append(text)
    model = _load_model(args.model, args)
    _token_model(model, args.model, "read text")
    if model.config["num_classes"] != 2:
        raise UsageError(f"{args.model!r} has {model.config['num_classes']} classes; predict "
                         "reports positive/negative and needs 2")
    if not texts:
        return 0
    from .datasets import imdb
    try:
        word_index = imdb.get_word_index(path=_data_path(args.data_dir, "imdb_word_index.json"))
    except ValueError as e:                     # a damaged word index file
        raise UsageError(str(e)) from None
    _compile_notice(model)
    from .model import UnknownTextWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownTextWarning)
        ids = model.encode(texts, word_index=word_index)
    for w in caught:
        if issubclass(w.category, UnknownTextWarning):
            print(f"{PROG}: note: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    import numpy as np
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # said below, as an error
        p = model.predict_proba(ids, verbose=0)[:, 1]
    if not np.isfinite(p).all():
        raise UsageError(f"{args.model!r} gives no finite prediction for "
                         f"{int((~np.isfinite(p)).sum())} of {len(p)} texts: its outputs "
                         "overflow (weights too large); no prediction printed")
    rows = [{"text": t, "probability_positive": float(q), "label": int(q > 0.5),
             "sentiment": "positive" if q > 0.5 else "negative"} for t, q in zip(texts, p)]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['probability_positive']:.4f}\t{row['sentiment']}")
    return 0


def cmd_lm_train(args):
    import time

    from . import layers, losses, optimizers, text
    from .models import Sequential
    try:
        train_texts, valid_texts = text.read_corpus(args.corpus, args.data_dir)
        vocab = text.Vocabulary.build(train_texts, args.level, args.num_words
                                      if args.level == "word" else None)
        train_ids = vocab.encode(train_texts)[:args.limit]
        if args.level == "char":                   # characters unseen in training: dropped
            valid_texts = ["".join(c for c in t if c in vocab.stoi) for t in valid_texts]
        valid_ids = vocab.encode(valid_texts)
        x, y = text.windows(text.batchify(train_ids, args.batch_size), args.bptt)
        xv, yv = text.windows(text.batchify(valid_ids, args.batch_size), args.bptt)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    stack = [layers.Input((None,), batch_size=args.batch_size),
             layers.Embedding(len(vocab), args.embed_dim)]
    for _ in range(args.layers):
        if args.dropout:
            stack.append(layers.Dropout(args.dropout))
        stack.append(layers.SimpleRNN(args.hidden_dim, return_sequences=True, stateful=True))
    if args.dropout:
        stack.append(layers.Dropout(args.dropout))
    model = Sequential([*stack, layers.Dense(len(vocab))], seed=args.seed, backend=args.backend,
                       threads=args.threads)
    model.compile(optimizers.Adam(args.learning_rate, global_clipnorm=args.clipnorm),
                  losses.SparseCategoricalCrossentropy(from_logits=True))
    extra = {"vocab": vocab.itos, "level": vocab.level}
    print(f"{args.corpus}: {len(train_ids):,} training and {len(valid_ids):,} validation tokens, "
          f"vocabulary {len(vocab):,} ({vocab.level}s); {len(x) // args.batch_size:,} windows "
          f"of {args.batch_size} x {args.bptt} per epoch", flush=True)
    for epoch in range(args.epochs):
        model.reset_states()                       # each epoch reads the streams from the start
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=args.batch_size, epochs=epoch + 1,
                            initial_epoch=epoch, shuffle=False, verbose=0 if args.quiet else 1)
        seconds = time.perf_counter() - start
        ppl = text.perplexity(model, xv, yv, args.batch_size)
        model.save(args.output, extra=extra)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {history.history['loss'][-1]:.4f}, "
              f"validation perplexity {ppl:.2f}, {x.size / seconds:,.0f} tokens/s; saved "
              f"{args.output}", flush=True)
    return 0


def cmd_lm_generate(args):
    from . import text
    from .models import load_model
    try:
        model = load_model(args.model, backend=args.backend, threads=args.threads)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if not isinstance(model.extra, dict) or "vocab" not in model.extra:
        raise UsageError(f"{args.model!r} holds no vocabulary: it was not saved by "
                         "'fastrnn lm train'")
    vocab = text.Vocabulary(model.extra["vocab"], model.extra.get("level", "word"))
    try:
        out = text.generate(model, vocab, args.prompt, args.length, args.temperature, args.top_k,
                            args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(out)
    return 0


def cmd_bench(argv):
    """``fastrnn bench ...``: everything is handled by ``fastrnn.bench.main(argv)``."""
    try:
        bench = importlib.import_module("fastrnn.bench")
    except ModuleNotFoundError as e:
        if e.name == "fastrnn.bench":
            raise UsageError("'fastrnn bench' is not available in this installation "
                             "(the module fastrnn.bench is missing)") from None
        raise UsageError(f"'fastrnn bench' needs the package {e.name!r}: install it (e.g. "
                         "pip install 'fastrnn[dev]')") from None
    code = bench.main(list(argv))
    return _exit_code(code)
