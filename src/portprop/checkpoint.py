"""Moved to :mod:`portprop.io`: this module re-exports its public names, so that code
importing ``portprop.checkpoint`` keeps working.

Checkpoints are in :mod:`portprop.io.checkpoint`, the safetensors format in
:mod:`portprop.io.safetensors` and the torch state-dict conversions in
:mod:`portprop.io.torch_interop`; import any of these names from :mod:`portprop.io`.
"""

from __future__ import annotations

from portprop.io import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    Checkpoint,
    from_torch_state_dict,
    load,
    load_into,
    read_safetensors,
    restore_rng,
    save,
    to_torch_state_dict,
    write_safetensors,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
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
