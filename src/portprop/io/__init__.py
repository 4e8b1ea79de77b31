"""Files: portprop's checkpoints, the safetensors format, atomic writes, torch state dicts.

Every file portprop reads or writes goes through this package; it knows models and
layers but nothing of training.  Its modules:

- :mod:`portprop.io.checkpoint`: portprop's checkpoints, a model with its optimizer's
  state, epoch and random state (:func:`save`, :func:`load`, :func:`load_into`,
  :func:`restore_rng`, :class:`Checkpoint`, :data:`FORMAT_VERSION`).
- :mod:`portprop.io.architecture`: a model's layer specs, checked and turned back into
  layers (used by the checkpoints; no public names).
- :mod:`portprop.io.safetensors`: the safetensors file format alone, with its limits
  and checks (:func:`read_safetensors`, :func:`write_safetensors`,
  :data:`MAX_HEADER_BYTES`, :data:`MAX_TENSORS`).
- :mod:`portprop.io.atomic`: atomic file writes (``write_atomically``), shared by
  checkpoints, plots and the command line; it writes through character devices and
  FIFOs, and keeps symbolic links.
- :mod:`portprop.io.torch_interop`: a model's parameters as a torch ``state_dict`` and
  back (:func:`to_torch_state_dict`, :func:`from_torch_state_dict`).
"""

from __future__ import annotations

from portprop.io.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    load,
    load_into,
    restore_rng,
    save,
)
from portprop.io.safetensors import (
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    read_safetensors,
    write_safetensors,
)
from portprop.io.torch_interop import from_torch_state_dict, to_torch_state_dict

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "MAX_TENSORS",
    "Checkpoint",
    "from_torch_state_dict",
    "load",
    "load_into",
    "read_safetensors",
    "restore_rng",
    "save",
    "to_torch_state_dict",
    "write_safetensors",
]
