"""The ``portprop`` command: train, evaluate and apply an MLP from the shell.

::

    portprop train --dataset digits --save digits.safetensors --plot digits.png
    portprop evaluate digits.safetensors --dataset digits
    portprop predict digits.safetensors samples.csv --output predictions.csv
    portprop backends

``python -m portprop ...`` runs the same command.  ``portprop COMMAND --help`` lists
every option with its default.

train
-----
1. Loads the data set: ``disk`` (the lecture's problem, ``--samples`` points drawn with
   ``--seed``), ``digits`` (scikit-learn's 8x8 digits, nothing downloaded), or a
   ``.csv`` file (``--label-column``) or ``.npz`` archive (``--features-key``,
   ``--labels-key``).
2. Holds out ``--test-size`` of it for testing, then ``--validation-split`` of the rest
   for validation; both splits are shuffled with ``--seed`` and stratified by class.
3. Fits a :class:`~portprop.datasets.Standardizer` on the training part alone and
   scales every part with it.
4. Builds ``Linear`` layers of ``--hidden`` units with ``--activation`` between them
   (each after a ``LayerNorm`` with ``--norm layer``, and followed by
   ``Dropout(--dropout)``), seeded by ``--seed``, and trains
   them with :func:`portprop.fit` (a progress bar per epoch on a terminal, one line per
   epoch otherwise; ``--quiet`` silences it, ``--verbose`` prints a line per epoch
   always).
5. Prints a table of the loss and accuracy on the train, validation and test parts,
   each computed after training in evaluation mode (no dropout), then the time per
   epoch, the backend and the device.

``--save`` writes a checkpoint (:func:`portprop.save`) whose ``extra`` holds what
``evaluate`` and ``predict`` need: the standardizer's statistics, the loss, the class
labels, how the data were loaded and split, the training settings, the final metrics and
the history.  ``--plot PATH`` draws the loss and accuracy curves (train and validation)
into ``PATH``; for 2-D inputs it also draws the decision boundary, with the test
samples, into a second file ``<stem>_boundary<suffix>`` beside it.

Targets follow the loss:

- ``cross_entropy``: class labels (integers or strings), one output per class;
- ``bce``: exactly two classes, one output (a logit for the second class);
- ``mse``: class labels become one-hot targets (one output per class, the lecture's
  setting, accuracy by argmax); labels that are real, non-integral numbers make a
  regression with one output (no accuracy).

evaluate
--------
Loads a checkpoint (on ``--backend``, default the current one), applies the stored
standardization and prints the loss and accuracy on the data.  ``--split`` picks which
data: ``test`` redoes the train/test split recorded in the checkpoint and evaluates the
test part; ``all`` takes the whole data set; ``auto`` (the default) takes ``test`` when
the data set is the one the model was trained on (same name, or the same file, and for
``disk`` the same samples and seed), so that the numbers repeat ``train``'s test row,
and ``all`` otherwise.  The output says which it used.

predict
-------
Reads features from a ``.csv`` file or an ``.npz`` archive (``--features-key``),
applies the stored standardization and writes one CSV row per sample: ``prediction``
(the class label) and ``probability_<class>`` for each class, for a model trained with
``cross_entropy`` or ``bce``; ``prediction`` and ``score_<class>`` (the raw outputs) for
``mse`` on classes; ``prediction`` (or ``prediction_<i>`` per output) for a regression.

A CSV file holds the model's features, every column, or those and one label column,
which is ignored: the one ``--label-column`` names, or by default (a file with exactly
one column more than the model's features) the training run's label column (the last
for the disk and digits), with a note on standard error that says which column it took;
``--label-column none`` refuses a file with a label column.

It writes to standard output (``--output -``, the default), or to ``--output PATH``: a
regular file is replaced atomically (a temporary file renamed onto it), a character
device, a FIFO or a link to one (``/dev/stdout``) is written through.

Errors
------
A bad flag, an unknown data set, a missing, corrupt or truncated file (a CSV file that is
not UTF-8 text, an ``.npz`` archive whose arrays do not fit their declared sizes, a
checkpoint whose ``extra`` is damaged), or a backend that cannot run here prints one
line, ``portprop: error: ...``, naming the file, on standard error, writes nothing, and
exits with status 2; an interrupt exits with 130.

Modules
-------
The command is a package, one module per part; only :func:`main` is public.

- ``__init__``: :func:`main`, which parses, runs the subcommand and turns an error
  into its one line and exit status.
- ``_common``: what the subcommands share: the command's name, its defaults and
  choices, the error of a request that cannot be carried out, and the output helpers
  (the metrics table, the backend line, the checks of output paths).
- ``_parser``: the argument parser: the option types, the subcommands and their
  options, and the ``backends`` subcommand.
- ``_data``: reading and checking the data the command gets: data sets (``--dataset``)
  and the features that ``predict`` reads.
- ``_task``: the task: the loss, the classes and the targets, from the training labels
  or from a checkpoint written by ``portprop train``.
- ``_train``, ``_evaluate``, ``_predict``: the subcommands of those names.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

# the settings, still read as portprop.cli.DEFAULTS and so on
from portprop.cli._common import ACTIVATIONS as ACTIVATIONS
from portprop.cli._common import DEFAULT_LR as DEFAULT_LR
from portprop.cli._common import DEFAULT_MOMENTUM as DEFAULT_MOMENTUM
from portprop.cli._common import DEFAULTS as DEFAULTS
from portprop.cli._common import LOSSES as LOSSES
from portprop.cli._common import OPTIMIZERS as OPTIMIZERS
from portprop.cli._common import PROG as PROG
from portprop.cli._common import WRITTEN_BY as WRITTEN_BY
from portprop.cli._parser import _build_parser
from portprop.errors import PortpropError

__all__ = ["main"]


def _message(exc: BaseException) -> str:
    """One line for the user."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # KeyError's str() would quote it
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``portprop`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 2 for a usage error or a request that cannot
    be carried out (a one-line ``portprop: error: ...`` on standard error), 130 when
    interrupted.  Internal errors propagate with their traceback.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help and --version (0), bad flags (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status: int = args.run(args, sys.stdout, sys.stderr)
    except BrokenPipeError:
        # the reader of our output went away (portprop predict ... | head): stop quietly
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (PortpropError, OSError, ValueError, KeyError, ImportError) as exc:
        sys.stderr.write(f"{PROG}: error: {_message(exc)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    return status
