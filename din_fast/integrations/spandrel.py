"""spandrel integration: din_fast's models in spandrel's architecture registry, so that chaiNNer, ComfyUI
and any ``spandrel.ModelLoader`` load DIN, DeFiAN, CIRN and DRFN weights as din_fast's fast models::

    import spandrel
    from din_fast.integrations.spandrel import install

    install()                                                   # once, before loading
    descriptor = spandrel.ModelLoader().load_from_file("DIN_x4.pth")
    descriptor.model                                            # a din_fast.DIN running the fused ops
    sr = descriptor(lr)                                         # (1, 3, H, W) in [0, 1] → (1, 3, 4H, 4W)

spandrel gives an architecture nothing but the state dict (a native file's din_fast header is not passed
on), so everything is read from it:

- the family, from marker keys in either layout: the authors' (DIN ``feat_conv`` / ``WRDB1_1``, DeFiAN
  ``body.0.hessian3``) or din_fast's own (``model.state_dict()``, native ``.safetensors`` files);
- the size, from shapes and counts: widths are conv output channels, depths are runs of consecutive
  indices (branches, blocks, modules, groups), a reduction r is C / (C/r), the bottleneck's channels;
- the scale, from the pixel-shuffle convs (C·r² outputs: one conv with r = 3 is x3, n convs with r = 2
  are x2ⁿ) or, for CIRN, from the back-projection kernel (DBPN's 6, 7, 8, 12 for x2, x3, x4, x8).

The model so described is then built on the meta device (no memory, no initialisation) and the state
dict must match every one of its keys and shapes (through ``convert_official`` for the authors'
layout), so a detector claims only what its model loads exactly, never a near miss of another
architecture.

What a state dict cannot say: din-deblur and din-dehaze have the same layers (such weights load as
din-deblur: the same computation), and sizes that are no registered preset load under the family's base
name with the sizes as overrides (a DeFiAN with 16 channels is ``defian-s`` with ``channels=16``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from din_fast.deploy.exporter import require
from din_fast.models.blocks import SRModel
from din_fast.models.cirn import PROJECTION
from din_fast.models.official import convert_official
from din_fast.models.registry import create_model, model_entry

spandrel = require("spandrel", "din_fast.integrations.spandrel",
                   install="pip install 'din_fast[spandrel]' (or pip install torch==<your torch> spandrel: "
                           "unpinned, its torchvision dependency upgrades torch)")

__all__ = ["ARCHITECTURES", "DinFastArch", "Detected", "install"]


@dataclass(frozen=True)
class Detected:
    """A state dict identified as a din_fast model: what ``create_model(name, scale, **config)`` builds,
    and the weights in din_fast's layout (converted when they came in the authors')."""

    name: str
    scale: int
    config: dict[str, Any]
    state: dict[str, torch.Tensor]


def _count(state: Mapping[str, Any], pattern: str, start: int = 0, step: int = 1) -> int:
    """How many of ``pattern.format(start)``, ``pattern.format(start + step)``, … are keys, counting until
    the first that is not."""
    n = 0
    while pattern.format(start + n * step) in state:
        n += 1
    return n


def _shuffle_scale(state: Mapping[str, torch.Tensor], prefix: str, channels: int, convs: int) -> int | None:
    """The scale of a pixel-shuffle upsampler ``prefix.{0, 2, 4, …}``: its first ``convs`` convs map C to
    C·r² channels; one with r = 3 is x3, n with r = 2 are x2ⁿ. None for anything else."""
    ratios = [state[f"{prefix}.{2 * i}.weight"].shape[0] // channels for i in range(convs)]
    if ratios == [9]:
        return 3
    return 2 ** len(ratios) if ratios and set(ratios) == {4} else None


def _preset(names: tuple[str, ...], config: dict[str, Any]) -> str:
    """The first of ``names`` whose registered defaults ``config`` matches, else the first (the base)."""
    for name in names:
        if all(config.get(k) == v for k, v in model_entry(name).defaults.items()):
            return name
    return names[0]


def _din(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None, dict[str, Any], bool] | None:
    """DIN (journal ``din``, conference ``din-ijcai``) and DIN's restoration models."""
    if "feat_conv.weight" in state:  # the authors' din_arch.DIN
        prefix, official = "WRDB{}_{}", True
        f = state["feat_conv.weight"].shape[0]
        g = state["WRDB1_1.RDB1.conv1.weight"].shape[0]
        branches, blocks = _count(state, "WRDB{}_1.conv0.weight", 1), _count(state, "WRDB1_{}.conv0.weight", 1)
        rdbs = _count(state, "WRDB1_1.RDB{}.conv1.weight", 1)
        bottleneck = state.get("AsyCA2_1.conv_dc.weight")
        journal, task, up = "conv_out1.weight" in state, None, "up_recon.UPNet"
    elif "branches.0.0.conv0.weight" in state:
        official = False
        f = state["branches.0.0.conv0.weight"].shape[0]
        g = state["branches.0.0.rdbs.0.convs.0.weight"].shape[0]
        branches, blocks = _count(state, "branches.{}.0.conv0.weight"), _count(state, "branches.0.{}.conv0.weight")
        rdbs = _count(state, "branches.0.0.rdbs.{}.convs.0.weight")
        bottleneck = state.get("fusions.0.0.conv_dc.weight")
        journal, up = "gff2.weight" in state, "upsampler"
        # restoration: a tail instead of the upsampler; the strided head (deblur, dehaze) is two layers
        task = ("deblur" if "head.1.weight" in state else "derain") if "tail.0.weight" in state else None
    else:
        return None
    config = dict(num_features=f, growth_rate=g, branches=branches, blocks=blocks, rdbs=rdbs)
    if bottleneck is not None:  # (one branch has no AsyCA: the reduction is unused, the default stays)
        config["reduction"] = f // bottleneck.shape[0]
    if task is not None:
        return f"din-{task}", 1, config, official
    convs = _count(state, up + ".{}.weight", step=2) - 1  # the last conv maps to RGB
    return ("din" if journal else "din-ijcai"), _shuffle_scale(state, up, f, convs), config, official


def _defian(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None, dict[str, Any], bool] | None:
    """DeFiAN-S and DeFiAN-L (one architecture; the preset is named when the sizes are one)."""
    if "body.0.hessian3.0.grad_xx.weight" in state:  # the authors' model.Generator
        official, up = True, "upscale.0"
    elif "body.0.mshf.weight" in state:
        official, up = False, "upscale"
    else:
        return None
    c = state["input.weight"].shape[0]
    config = dict(channels=c, rcabs=_count(state, "body.0.body_block.{}.block.0.weight"),
                  modules=_count(state, "body.{}.body_block.0.block.0.weight"),
                  reduction=c // state["body.0.body_block.0.calayer.0.weight"].shape[0])
    scale = _shuffle_scale(state, up, c, _count(state, up + ".{}.weight", step=2))
    return _preset(("defian-s", "defian-l"), config), scale, config, official


def _cirn(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None, dict[str, Any], bool] | None:
    """CIRN (din_fast's layout only: there is no official code)."""
    if "first_up.up1.0.weight" not in state:
        return None
    c = state["feb.2.weight"].shape[0]
    config = dict(channels=c, features=state["feb.0.weight"].shape[0], groups=_count(state, "groups.{}.isab.gamma"),
                  reduction=c // state["groups.0.isab.query.weight"].shape[0])
    kernel = state["first_up.up1.0.weight"].shape[-1]
    scale = next((s for s, (k, _, _) in PROJECTION.items() if k == kernel), None)
    return "cirn", scale, config, False


def _drfn(state: Mapping[str, torch.Tensor]) -> tuple[str, int | None, dict[str, Any], bool] | None:
    """DRFN (din_fast's layout only: there is no official code)."""
    if "groups.0.attention.sa.weight" not in state:
        return None
    c = state["head.weight"].shape[0]
    config = dict(channels=c, groups=_count(state, "groups.{}.attention.sa.weight"),
                  blocks=_count(state, "groups.0.blocks.{}.body.1.weight"),
                  block_convs=_count(state, "groups.0.blocks.0.body.{}.weight", 1, 2),
                  reduction=c // state["groups.0.attention.ca_down.weight"].shape[0])
    return "drfn", _shuffle_scale(state, "upscale", c, _count(state, "upscale.{}.weight", step=2)), config, False


def _verified(name: str, scale: int | None, config: dict[str, Any], official: bool,
              state: Mapping[str, torch.Tensor]) -> Detected | None:
    """``Detected`` if model ``name`` x``scale`` with ``config`` (built on the meta device) has exactly the
    keys and shapes of ``state``; None otherwise, or when the sizes are impossible."""
    if scale is None:
        return None
    try:
        with torch.device("meta"):
            model = create_model(name, scale, **config)
        if official:
            return Detected(name, scale, config, convert_official(model, state))  # CheckpointError on a mismatch
    except ValueError:
        return None
    own = model.state_dict()
    if own.keys() != state.keys() or any(state[k].shape != v.shape for k, v in own.items()):
        return None
    return Detected(name, scale, config, dict(state))


Reader = Callable[[Mapping[str, torch.Tensor]], "tuple[str, int | None, dict[str, Any], bool] | None"]


def _identifier(read: Reader) -> Callable[[Mapping[str, Any]], Detected | None]:
    """``read`` (family, scale and sizes from marker keys and shapes) made total and checked: None for
    non-tensor entries, a missing key or an empty dimension on the way, and any model that does not match."""

    def identify(state: Mapping[str, Any]) -> Detected | None:
        if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
            return None
        try:
            found = read(state)
        except (KeyError, IndexError, ZeroDivisionError):
            return None
        return None if found is None else _verified(*found, state)

    return identify


class DinFastArch(spandrel.Architecture[SRModel]):
    """A din_fast model family as a spandrel architecture. ``detect`` and ``load`` both identify the state
    dict (module docstring); ``load`` returns an ``ImageModelDescriptor`` of din_fast's model (purpose SR,
    or Restoration at scale 1; RGB in and out; tags: the registry name and the sizes)."""

    def __init__(self, id: str, name: str, read: Reader, tags: dict[str, str]) -> None:
        identify = _identifier(read)
        super().__init__(id=id, name=name, detect=lambda state: identify(state) is not None)
        self.identify = identify
        self._tags = tags

    def load(self, state_dict: Mapping[str, Any]) -> Any:
        found = self.identify(state_dict)
        if found is None:
            raise spandrel.UnsupportedModelError(f"not a {self.name} state dict")
        model = create_model(found.name, found.scale, **found.config)
        tags = [found.name] + [f"{model.config[key]}{suffix}" for key, suffix in self._tags.items()]
        return spandrel.ImageModelDescriptor(
            model, found.state, architecture=self, purpose="SR" if found.scale > 1 else "Restoration", tags=tags,
            supports_half=False, supports_bfloat16=True, scale=found.scale, input_channels=3, output_channels=3)


#: din_fast's architectures for spandrel (ids prefixed ``din_fast.`` so that none can clash with spandrel's).
ARCHITECTURES = (
    DinFastArch("din_fast.DIN", "DIN", _din, dict(num_features="nf", growth_rate="gr", branches="br",
                                                   blocks="wrdb", rdbs="rdb")),
    DinFastArch("din_fast.DeFiAN", "DeFiAN", _defian, dict(channels="nf", rcabs="rcab", modules="mod")),
    DinFastArch("din_fast.CIRN", "CIRN", _cirn, dict(channels="nf", features="n0", groups="abpg")),
    DinFastArch("din_fast.DRFN", "DRFN", _drfn, dict(channels="nf", groups="rag", blocks="rb")),
)


def install(registry: Any = None, ignore_duplicates: bool = True) -> list[Any]:
    """Add din_fast's architectures to a spandrel ``ArchRegistry`` (default ``spandrel.MAIN_REGISTRY``, the
    one every ``ModelLoader()`` uses); they are tried after the registry's own. A second call adds nothing
    (or, with ``ignore_duplicates=False``, raises spandrel's DuplicateArchitectureError).

    Returns the ``ArchSupport`` entries added."""
    target = spandrel.MAIN_REGISTRY if registry is None else registry
    return target.add(*(spandrel.ArchSupport.from_architecture(arch) for arch in ARCHITECTURES),
                      ignore_duplicates=ignore_duplicates)
