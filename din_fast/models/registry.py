"""Model registry: ``create_model(name, scale, **overrides)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from din_fast.models.blocks import SRModel
from din_fast.models.cirn import CIRN
from din_fast.models.defian import DeFiAN
from din_fast.models.din import DIN, DINRestoration
from din_fast.models.drfn import DRFN


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, fixed defaults, supported scales and documented overrides."""

    builder: Callable[..., SRModel]
    scales: tuple[int, ...]
    description: str
    overrides: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, entry: ModelEntry) -> None:
    """Add a model under ``name`` (used by the model modules; names are unique)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = entry


def list_models() -> list[str]:
    """Names accepted by ``create_model``."""
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; ValueError naming the known models if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None


def create_model(name: str, scale: int | None = None, **overrides: Any) -> SRModel:
    """Build model ``name`` for ``scale`` with random weights.

    ``scale=None`` means 4 for the SR models and 1 for the same-size restoration models (``din-deblur``,
    ``din-dehaze``, ``din-derain``), whose only scale is 1.

    ``overrides`` change the architecture (e.g. ``num_features=32`` for DIN, ``channels=16`` for DeFiAN);
    any constructor argument of the model class is accepted, the documented ones are in ``ModelEntry``.
    """
    entry = model_entry(name)
    if scale is None:
        scale = 4 if 4 in entry.scales else entry.scales[0]
    if scale not in entry.scales:
        raise ValueError(f"model {name!r} supports scales {', '.join(map(str, entry.scales))}; got scale={scale!r}")
    allowed = set(entry.builder.__init__.__code__.co_varnames[1:entry.builder.__init__.__code__.co_argcount])
    unknown = sorted(set(overrides) - allowed - {"scale"})
    if unknown:
        raise ValueError(f"unknown override(s) {', '.join(map(repr, unknown))} for model {name!r}; "
                         f"expected some of: {', '.join(entry.overrides)}")
    model = entry.builder(scale=scale, **{**entry.defaults, **overrides})
    model.model_name = name
    return model


register_model("din", ModelEntry(
    DIN, (2, 3, 4, 8), "DIN, journal / official 'Enhanced' code (r=4, two GFF convs, bilinear residual)",
    ("num_features", "growth_rate", "branches", "blocks", "rdbs", "reduction"), dict(variant="journal")))
register_model("din-ijcai", ModelEntry(
    DIN, (2, 3, 4), "DIN, IJCAI 2020 conference code (r=8, one GFF conv, no image residual)",
    ("num_features", "growth_rate", "branches", "blocks", "rdbs", "reduction"),
    dict(variant="ijcai", reduction=8)))
register_model("defian-s", ModelEntry(
    DeFiAN, (2, 3, 4), "DeFiAN-S (C=32, 10 RCABs, 5 modules)", ("channels", "rcabs", "modules", "reduction"),
    dict(channels=32, rcabs=10, modules=5)))
register_model("defian-l", ModelEntry(
    DeFiAN, (2, 3, 4), "DeFiAN-L (C=64, 20 RCABs, 10 modules)", ("channels", "rcabs", "modules", "reduction"),
    dict(channels=64, rcabs=20, modules=10)))
register_model("cirn", ModelEntry(
    CIRN, (2, 3, 4, 8), "CIRN (C=64, F=256, 6 back-projection groups with criss-cross ISABs; from the poster)",
    ("channels", "features", "groups", "reduction")))
register_model("drfn", ModelEntry(
    DRFN, (2, 3, 4), "DRFN (C=64, G=16 RAGs of M=8 one-conv residual blocks, CBAM attention; 5.2M at x4)",
    ("channels", "groups", "blocks", "block_convs", "reduction")))
_DIN_OVERRIDES = ("num_features", "growth_rate", "branches", "blocks", "rdbs", "reduction")
register_model("din-deblur", ModelEntry(
    DINRestoration, (1,), "DIN for motion deblurring (journal §3.5: 3x3 + 8x8/4 conv head, 4x sub-pixel tail)",
    _DIN_OVERRIDES, dict(task="deblur")))
register_model("din-dehaze", ModelEntry(
    DINRestoration, (1,), "DIN for dehazing (journal §3.5: 3x3 + 8x8/4 conv head, 4x sub-pixel tail)",
    _DIN_OVERRIDES, dict(task="dehaze")))
register_model("din-derain", ModelEntry(
    DINRestoration, (1,), "DIN for deraining (journal §3.5: 3x3 conv head and tail)", _DIN_OVERRIDES,
    dict(task="derain")))
