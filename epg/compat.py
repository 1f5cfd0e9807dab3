"""The one compatibility shim of the project: PyTorchVideo without torchvision.

PyTorchVideo 0.1.5's ``pytorchvideo.models`` package (and ``models.head``, which
``models.x3d`` imports) runs ``from torchvision.ops import RoIAlign`` at import
time. That is the only torchvision name on the import chain of ``create_x3d``
(checked: ``pytorchvideo/models/*.py`` reference no other torchvision symbol;
``RoIAlign`` is only *called* by ``create_res_roi_pooling_head``, which X3D never
builds). torchvision is deliberately not a dependency (its wheels pin a
different torch build), so when it is missing a minimal stub ``torchvision`` /
``torchvision.ops`` (whose ``RoIAlign`` raises if anyone ever instantiates it)
sits in ``sys.modules`` for the duration of that one import and is removed
afterwards. When a real torchvision is installed, nothing is touched.

Import pytorchvideo models through ``import_create_x3d`` only.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any, Callable

import torch.nn as nn


class _RoIAlignUnavailable(nn.Module):
    """Placeholder for torchvision.ops.RoIAlign; only detection heads use it, and EPG has none."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "torchvision.ops.RoIAlign is not available: torchvision is not installed and "
            "epg.compat imported pytorchvideo with a stub. EPG's X3D encoder never needs RoIAlign."
        )


def import_create_x3d() -> Callable[..., nn.Module]:
    """PyTorchVideo's ``create_x3d``, importable with or without torchvision.

    Without torchvision, a stub ``torchvision.ops`` is placed in ``sys.modules`` only
    while ``pytorchvideo.models`` is imported (the package imports all its model
    modules at once), then removed again, so no other library is misled into
    believing torchvision is installed.
    """
    if "pytorchvideo.models.x3d" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        from pytorchvideo.models.x3d import create_x3d

        return create_x3d
    ops = types.ModuleType("torchvision.ops")
    ops.RoIAlign = _RoIAlignUnavailable  # type: ignore[attr-defined]
    torchvision = types.ModuleType("torchvision")
    torchvision.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = torchvision, ops
    try:
        from pytorchvideo.models.x3d import create_x3d
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return create_x3d
