"""Backbones: real Lite0 ImageNet weights, MoCo checkpoints, architectures by name."""

import pytest
import torch
import torchvision

from ucdir_core.models.backbones import CheckpointMismatch, build_backbone, efficientnet_lite0, resnet50_moco


def test_lite0_weights_classify_the_daisy():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from ucdir_core.data.images import eval_transform

    bb = efficientnet_lite0(keep_classifier=True)
    bb.module.eval()
    img = Image.fromarray(load_sample_image("flower.jpg"))
    x = eval_transform(224, 256, bb.mean, bb.std)(img)[None]
    with torch.no_grad():
        logits = bb.module(x)
    assert int(logits.argmax()) == 985  # ImageNet class 985: daisy
    feats = build_backbone("efficientnet_lite0")
    assert feats.dim == 1280 and feats.module(x).shape == (1, 1280)


@pytest.fixture(scope="module")
def moco_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    state = {f"module.encoder_q.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["module.encoder_q.fc.0.weight"] = torch.zeros(2048, 2048)  # MoCo v2's MLP head, dropped
    state["module.encoder_k.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    path = tmp_path_factory.mktemp("moco") / "moco_v2_800ep.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state}, path)
    return path, net


def test_moco_checkpoint_loads_query_encoder(moco_file):
    path, net = moco_file
    bb = resnet50_moco(path)
    assert bb.dim == 2048
    torch.testing.assert_close(bb.module.conv1.weight, net.conv1.weight)
    torch.testing.assert_close(bb.module.layer4[2].bn3.running_var, net.layer4[2].bn3.running_var)
    assert bb.module(torch.randn(2, 3, 64, 64)).shape == (2, 2048)


def test_moco_checkpoint_mismatch_names_keys(moco_file, tmp_path):
    path, _ = moco_file
    state = torch.load(path, weights_only=True)["state_dict"]
    del state["module.encoder_q.layer1.0.conv1.weight"]
    state["module.encoder_q.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(CheckpointMismatch, match="layer1.0.conv1.weight") as err:
        resnet50_moco(bad)
    assert "extra.weight" in str(err.value)
    with pytest.raises(FileNotFoundError):
        resnet50_moco(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="checkpoint"):
        build_backbone("resnet50_moco")


@pytest.mark.parametrize("name,dim", [("tv:resnet18", 512), ("timm:resnet18", 512), ("small_cnn", 256)])
def test_architectures_by_name(name, dim):
    bb = build_backbone(name)
    assert bb.dim == dim
    assert bb.module(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_unknown_backbone():
    for name in ("nope", "tv:nope", "timm:nope"):
        with pytest.raises(ValueError):
            build_backbone(name)
