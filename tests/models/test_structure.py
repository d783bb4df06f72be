"""Published structure: groups agree with the live modules' shapes and with the traced graph."""

import pytest
import torch

import effnet
from effnet.models.baselines import BASELINES
from effnet.models.config import MODEL_CONFIGS
from effnet.models.structure import trace_channel_groups


def meta_model(name, **kw):
    with torch.device("meta"):
        return effnet.create_model(name, **kw)


def channel_dims(model):
    """Every (tensor, dim) that indexes channels: dims 0 and 1 of convolution and linear weights
    (not the 1-wide input dim of a depthwise filter), dim 0 of biases and batch-norm vectors."""
    dims = set()
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        dims.add((key, 0))
        if tensor.dim() >= 2 and tensor.shape[1] > 1:
            dims.add((key, 1))
        if tensor.dim() >= 2 and tensor.shape[1] == 1 and "dw.conv" not in key:
            dims.add((key, 1))  # a 1-channel input (e.g. a 1-wide squeeze) is still a channel dim
    return dims


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_groups_cover_every_channel_dim_once_with_the_live_shapes(name):
    model = meta_model(name, num_classes=7)
    structure = model.structure()
    state = model.state_dict()
    members = [m for g in structure.groups for m in g.members]
    assert len(members) == len(set(members)), "a tensor dimension is in two groups"
    assert set(members) == channel_dims(model)
    for group in structure.groups:
        for key, dim in group.members:
            assert state[key].shape[dim] == group.channels, (group.name, key, dim)
    assert structure.group("classes").channels == 7 and not structure.group("classes").prunable
    assert not structure.group("input").prunable
    assert structure.stem == "stem.conv" and structure.classifier == "classifier"


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_declared_groups_equal_the_groups_traced_from_the_graph(name):
    model = meta_model(name, num_classes=5)
    declared = {frozenset(g.members): g.prunable for g in model.structure().groups}
    traced = {
        frozenset(g.members): g.prunable for g in trace_channel_groups(model, torch.zeros(1, 3, 32, 32, device="meta"))
    }
    assert declared == traced


def test_efficientnet_b0_groups_follow_the_block_design():
    structure = meta_model("efficientnet_b0").structure()
    hidden = structure.group("stages.1.0.hidden")
    assert hidden.channels == 96 and hidden.kind == "hidden"
    assert ("stages.1.0.se.fc1.weight", 1) in hidden.members and ("stages.1.0.project.conv.weight", 1) in hidden.members
    assert structure.group("stages.1.0.squeeze").channels == 4  # a quarter of the block input (16)
    # The residual of the second block ties its output to the first block's: one group for both.
    stage = structure.group("stages.1.0.out")
    assert ("stages.1.1.project.conv.weight", 0) in stage.members
    assert ("stages.2.0.expand.conv.weight", 1) in stage.members
    assert [s.stride for s in structure.stages] == [2, 4, 8, 16, 16, 32, 32]
    assert structure.stages[5].blocks == ("stages.5.0", "stages.5.1", "stages.5.2", "stages.5.3")


def test_features_only_models_publish_groups_without_head():
    structure = meta_model("efficientnet_lite0", features_only=True).structure()
    assert structure.classifier is None
    assert all(not k.startswith(("head.", "classifier.")) for g in structure.groups for k, _ in g.members)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_publish_structure(name):
    model = effnet.create_model(name, num_classes=4)
    structure = model.structure()
    state = model.state_dict()
    assert structure.classifier == model.classifier_name
    assert isinstance(model.get_submodule(structure.stem), torch.nn.Conv2d)
    assert structure.stages and structure.stages[-1].stride == 32
    members = [m for g in structure.groups for m in g.members]
    assert len(members) == len(set(members))
    prunable = [g for g in structure.groups if g.prunable]
    assert prunable, "every baseline has channels that can be pruned"
    for group in prunable:
        for key, dim in group.members:
            assert state[key].shape[dim] == group.channels, (group.name, key, dim)
    assert any(
        not g.prunable and ("fc.weight" in k or "classifier.3.weight" in k)
        for g in structure.groups
        for k, _ in g.members
    )


def test_resnet_residual_chains_are_one_group():
    structure = effnet.create_model("resnet18").structure()
    chain = next(g for g in structure.groups if ("layer1.0.conv2.weight", 0) in g.members)
    assert ("layer1.1.conv2.weight", 0) in chain.members and ("conv1.weight", 0) in chain.members
    assert [s.name for s in structure.stages] == ["layer1", "layer2", "layer3", "layer4"]


def test_shufflenet_split_and_shuffle_are_not_prunable():
    structure = effnet.create_model("shufflenet_v2_x1_0").structure()
    fixed = [g for g in structure.groups if not g.prunable and g.name not in ("input", "fc")]
    assert fixed and all("cat" in g.fixed for g in fixed)
