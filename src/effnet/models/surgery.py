"""Network surgery on EfficientNet: keep chosen channels of its groups, get a smaller network.

This is the step every structured pruning method ends with (Li et al., 2017,
https://arxiv.org/abs/1608.08710; Liu et al., 2017, "Learning Efficient Convolutional Networks
through Network Slimming", https://arxiv.org/abs/1708.06519): the criterion picks channels, and
the network is rebuilt physically smaller. The result is an ordinary :class:`EfficientNet` whose
config carries the new widths as an explicit layout, so it saves, reloads and exports like any
other model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from effnet.errors import EffnetError
from effnet.models.config import BlockSpec, Layout
from effnet.models.efficientnet import EfficientNet

__all__ = ["keep_channels"]


def keep_channels(model: EfficientNet, keep: Mapping[str, Sequence[int] | torch.Tensor]) -> EfficientNet:
    """A copy of ``model`` that keeps only the listed channels of the named groups.

    ``keep`` maps a group name of ``model.structure()`` (e.g. ``"stages.1.0.hidden"``) to the
    channel indices to keep, in the order they should appear. Other groups are unchanged; the
    input model is not modified. The copy is in the input's training mode, on its device.

    >>> import effnet
    >>> model = effnet.create_model("efficientnet_b0", num_classes=10)
    >>> small = keep_channels(model, {"stages.1.0.hidden": range(48)})
    >>> small.layout.blocks[1].hidden_channels
    48
    """
    structure = model.structure()
    groups = {g.name: g for g in structure.groups}
    selections: dict[tuple[str, int], torch.Tensor] = {}
    for name, indices in keep.items():
        group = groups.get(name)
        if group is None:
            raise EffnetError(f"no channel group {name!r} in this model; see model.structure().groups")
        if not group.prunable:
            raise EffnetError(f"channel group {name!r} cannot change its width ({group.fixed})")
        index = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices, dtype=torch.long)
        if index.dim() != 1 or index.numel() == 0:
            raise EffnetError(f"channel group {name!r} must keep at least one channel")
        if int(index.min()) < 0 or int(index.max()) >= group.channels or index.unique().numel() != index.numel():
            raise EffnetError(f"channel group {name!r}: indices must be distinct and in [0, {group.channels})")
        for member in group.members:
            selections[member] = index

    state = model.state_dict()
    new_state = {}
    for key, tensor in state.items():
        for dim in range(tensor.dim()):
            index = selections.get((key, dim))
            if index is not None:
                tensor = tensor.index_select(dim, index.to(tensor.device))
        new_state[key] = tensor.clone()  # never share storage with the input model

    layout = _layout_from_state(model.layout, new_state)
    config = model.config.replace(layout=layout)
    with torch.device("meta"):
        smaller = EfficientNet(config, features_only=model.features_only)
    smaller.load_state_dict(new_state, assign=True)
    smaller.train(model.training)
    if hasattr(model, "pretrained_meta"):
        smaller.pretrained_meta = copy.deepcopy(model.pretrained_meta)
    return smaller


def _layout_from_state(layout: Layout, state: Mapping[str, torch.Tensor]) -> Layout:
    """The widths the (sliced) tensors now have, block by block."""
    blocks = []
    position: dict[int, int] = {}
    for spec in layout.blocks:
        i = position[spec.stage] = position.get(spec.stage, -1) + 1
        path = f"stages.{spec.stage}.{i}"
        hidden = int(state[f"{path}.dw.conv.weight"].shape[0])
        in_channels = int(state[f"{path}.expand.conv.weight"].shape[1]) if spec.expand else hidden
        se = int(state[f"{path}.se.fc1.weight"].shape[0]) if spec.se_channels else 0
        out = int(state[f"{path}.project.conv.weight"].shape[0])
        blocks.append(
            BlockSpec(
                stage=spec.stage,
                in_channels=in_channels,
                hidden_channels=hidden,
                out_channels=out,
                se_channels=se,
                kernel=spec.kernel,
                stride=spec.stride,
                expand=spec.expand,
                residual=spec.residual,
            )
        )
    head = state.get("head.conv.weight")
    return Layout(
        stem_channels=int(state["stem.conv.weight"].shape[0]),
        blocks=tuple(blocks),
        head_channels=int(head.shape[0]) if head is not None else layout.head_channels,
    )
