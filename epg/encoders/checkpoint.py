"""Loading encoder weights from a local file, with errors that list what does not fit.

Published checkpoints come wrapped (``{"model_state": ...}`` for PyTorchVideo,
``{"state_dict": ...}`` for Lightning, ``module.`` prefixes from DDP); a silent
``strict=False`` load would hide a layout mismatch, so every mismatch is an
error naming the missing, unexpected and wrongly shaped keys.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn

_WRAPPERS = ("model_state", "state_dict", "model")
_PREFIXES = ("module.", "model.")
_SHOWN = 20


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model's."""


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from the usual containers.

    ``torch.load`` runs with ``weights_only=True`` unless ``trust_pickle`` (only for
    files you trust: a full pickle can run code).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: cannot be read with weights_only=True ({error}); re-save only its state dict "
            "or pass trust_pickle=True for a file you trust"
        ) from error
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[key] for key in _WRAPPERS if key in obj and isinstance(obj[key], Mapping)), None)
        if inner is None:
            raise ValueError(f"{path}: no state dict found; top-level keys: {sorted(map(str, obj))[:_SHOWN]}")
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    state = dict(obj)
    for prefix in _PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _is_state_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_matching(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    exclude: Callable[[str], bool],
    source: str,
    adapt: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[str]:
    """Load ``state`` into ``module`` except the keys ``exclude`` selects; everything else must match exactly.

    ``adapt(key, checkpoint_tensor, model_tensor)`` may convert a tensor (e.g. RGB → mono conv).
    Returns the loaded keys. Raises ``CheckpointMismatchError`` listing missing,
    unexpected and shape-mismatched keys.
    """
    own = module.state_dict()
    wanted = {k for k in own if not exclude(k)}
    given = {k: v for k, v in state.items() if not exclude(k)}
    if adapt is not None:
        given = {k: adapt(k, v, own[k]) if k in own else v for k, v in given.items()}
    # BatchNorm's step counter is absent from some converted checkpoints and carries no weights.
    missing = sorted(k for k in wanted - set(given) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(given) - wanted)
    shapes = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(own[k].shape)}"
        for k in wanted & set(given)
        if given[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(
            f"{source} does not match {type(module).__name__}: "
            f"{_listing('missing', missing)}; {_listing('unexpected', unexpected)}; "
            f"{_listing('shape mismatch', shapes)}"
        )
    result = module.load_state_dict(given, strict=False)
    assert not result.unexpected_keys and not set(result.missing_keys) & set(missing)
    return sorted(given)


def _listing(name: str, keys: Iterable[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_SHOWN]) + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")
    return f"{len(keys)} {name} key(s)" + (f" [{shown}]" if keys else "")
