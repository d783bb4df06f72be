"""What a model publishes about itself: stem, classifier, stages, feature taps and channel groups.

A *channel group* is a set of tensor dimensions indexed by the same channels: removing channel
``i`` of the group means removing index ``i`` along every one of its ``(tensor, dim)`` members,
and the network stays consistent. Structured pruning (Li et al., 2017, "Pruning Filters for
Efficient ConvNets", https://arxiv.org/abs/1608.08710) works group by group; in EfficientNet
the groups are a block's expansion (expand -> depthwise -> squeeze-excite -> project), the
squeeze width, and the block outputs that residual connections tie together through a stage.

Two sources of groups, checked against each other by the tests:

- :func:`efficientnet_structure` writes them down from the explicit block layout;
- :func:`trace_channel_groups` derives them for any network from its ``torch.fx`` graph
  (convolutions, batch norms, linears, element-wise ops and residual sums), which is how the
  torchvision baselines publish theirs. Operations it does not understand (concatenation,
  channel shuffle, reshapes) tie the channels they touch into a group marked not prunable,
  the same conservative rule dependency-graph pruners apply.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from effnet.models.config import Layout

Member = tuple[str, int]  # (state-dict tensor name, dimension)

__all__ = [
    "ChannelGroup",
    "FeatureInfo",
    "ModelStructure",
    "StageInfo",
    "efficientnet_structure",
    "model_structure",
    "trace_channel_groups",
]


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map that ``features_only`` returns: where it is taken and its shape."""

    stage: int  # index into ``model.stages``; the map is that stage's output
    channels: int
    stride: int  # reduction relative to the input


@dataclass(frozen=True)
class StageInfo:
    """A stage: its module, its blocks and the stride and width of its output."""

    index: int
    name: str  # module path, e.g. "stages.3"
    blocks: tuple[str, ...]  # module paths of its blocks, in order
    stride: int  # feature stride of the stage's output relative to the input
    out_channels: int


@dataclass(frozen=True)
class ChannelGroup:
    """Tensor dimensions that share one set of channels and must be pruned together."""

    name: str
    channels: int
    members: tuple[Member, ...]
    kind: str  # "input", "stem", "hidden", "squeeze", "stage", "head", "classes" or "traced"
    fixed: str | None = None  # why the group must keep its width (None: it may be pruned)

    @property
    def prunable(self) -> bool:
        return self.fixed is None


@dataclass(frozen=True)
class ModelStructure:
    """Everything a pass needs to find its way around a model without guessing names."""

    stem: str  # module path of the first convolution
    classifier: str | None  # module path of the final linear layer (None for features_only)
    stages: tuple[StageInfo, ...]
    groups: tuple[ChannelGroup, ...] = field(default=())

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- EfficientNet


def _conv_out(path: str) -> list[Member]:
    """The output-channel dimensions of a ConvBnAct at ``path``: its filters and batch norm."""
    bn = [(f"{path}.bn.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")]
    return [(f"{path}.conv.weight", 0), *bn]


def efficientnet_structure(layout: Layout, in_chans: int = 3, num_classes: int | None = 1000) -> ModelStructure:
    """The structure of an :class:`~effnet.models.efficientnet.EfficientNet` built from ``layout``.

    >>> from effnet.models.config import get_config
    >>> from effnet.models.scaling import resolve_layout
    >>> s = efficientnet_structure(resolve_layout(get_config("efficientnet_b0")))
    >>> s.group("stages.1.0.hidden").channels, s.group("stages.1.0.squeeze").channels
    (96, 4)
    """
    classifier = num_classes is not None
    groups = [ChannelGroup("input", in_chans, (("stem.conv.weight", 1),), "input", "the image channels")]
    # The group that currently carries the block input, built up as blocks consume it.
    current_name, current_kind, current = "stem", "stem", _conv_out("stem")
    current_size = layout.stem_channels
    index_in_stage: dict[int, int] = {}
    for spec in layout.blocks:
        i = index_in_stage[spec.stage] = index_in_stage.get(spec.stage, -1) + 1
        path = f"stages.{spec.stage}.{i}"
        hidden_members = [*_conv_out(f"{path}.dw"), (f"{path}.project.conv.weight", 1)]
        if spec.se_channels:
            hidden_members += [(f"{path}.se.fc1.weight", 1), (f"{path}.se.fc2.weight", 0), (f"{path}.se.fc2.bias", 0)]
            squeeze = ((f"{path}.se.fc1.weight", 0), (f"{path}.se.fc1.bias", 0), (f"{path}.se.fc2.weight", 1))
        if spec.expand:
            current.append((f"{path}.expand.conv.weight", 1))
            groups.append(
                ChannelGroup(
                    f"{path}.hidden", spec.hidden_channels, (*_conv_out(f"{path}.expand"), *hidden_members), "hidden"
                )
            )
        else:  # the depthwise convolution works on the block input itself
            current += hidden_members
        if spec.se_channels:
            groups.append(ChannelGroup(f"{path}.squeeze", spec.se_channels, squeeze, "squeeze"))
        if spec.residual:  # the sum ties the block output to its input
            current += _conv_out(f"{path}.project")
        else:
            groups.append(ChannelGroup(current_name, current_size, tuple(current), current_kind))
            current_name, current_kind, current = f"{path}.out", "stage", _conv_out(f"{path}.project")
            current_size = spec.out_channels
    if classifier:
        current.append(("head.conv.weight", 1))
        groups.append(ChannelGroup(current_name, current_size, tuple(current), current_kind))
        head = (*_conv_out("head"), ("classifier.weight", 1))
        groups.append(ChannelGroup("head", layout.head_channels, head, "head"))
        scores = (("classifier.weight", 0), ("classifier.bias", 0))
        groups.append(ChannelGroup("classes", num_classes, scores, "classes", "the class scores"))
    else:
        groups.append(ChannelGroup(current_name, current_size, tuple(current), current_kind))

    stages = []
    stride = 2  # the stem halves the input
    for stage in range(layout.num_stages):
        specs = [b for b in layout.blocks if b.stage == stage]
        stride *= specs[0].stride
        names = tuple(f"stages.{stage}.{i}" for i in range(len(specs)))
        stages.append(StageInfo(stage, f"stages.{stage}", names, stride, specs[-1].out_channels))
    return ModelStructure(
        stem="stem.conv", classifier="classifier" if classifier else None, stages=tuple(stages), groups=tuple(groups)
    )


# ------------------------------------------------------------------------- any network


class _Sets:
    """Union-find over channel spaces; each root keeps its members, size and fixed reasons."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.members: list[list[Member]] = []
        self.fixed: list[list[str]] = []
        self.size: list[int | None] = []
        self.name: list[str] = []

    def new(self, name: str, members: Iterable[Member] = (), size: int | None = None, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.members.append(list(members))
        self.fixed.append([fixed] if fixed else [])
        self.size.append(size)
        self.name.append(name)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if b < a:
            a, b = b, a  # the earlier space names the group
        self.parent[b] = a
        self.members[a] += self.members[b]
        self.fixed[a] += self.fixed[b]
        self.size[a] = self.size[a] if self.size[a] is not None else self.size[b]
        return a

    def add(self, i: int, members: Iterable[Member]) -> int:
        root = self.find(i)
        self.members[root] += list(members)
        return root

    def fix(self, i: int, reason: str) -> None:
        self.fixed[self.find(i)].append(reason)


_PASS_THROUGH_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.GELU,
    nn.Identity,
    nn.Dropout,
    nn.AdaptiveAvgPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
)
_PASS_THROUGH_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    nn.functional.relu,
    nn.functional.relu6,
    nn.functional.silu,
    nn.functional.hardswish,
    nn.functional.hardsigmoid,
    nn.functional.dropout,
    nn.functional.adaptive_avg_pool2d,
    nn.functional.avg_pool2d,
    nn.functional.max_pool2d,
}
_PASS_THROUGH_METHODS = {"relu", "sigmoid", "contiguous", "clone"}
_ELEMENTWISE = {operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub}


class _LeafTracer(fx.Tracer):
    """torch.nn layers are leaves, and so is any convolution subclass (e.g. TF "same" padding)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.modules.conv._ConvNd) or super().is_leaf_module(m, qualname)


def _stochastic_depth_functions() -> set[Any]:
    from torchvision.ops import stochastic_depth

    return {stochastic_depth}


def trace_channel_groups(model: nn.Module, example: torch.Tensor) -> tuple[ChannelGroup, ...]:
    """Channel groups of any traceable network, from its ``torch.fx`` graph and one example input.

    The model is traced in eval mode and not modified. Use a small example (e.g. 1x3x32x32),
    on the meta device for large models.
    """
    was_training = model.training
    model.eval()
    try:
        graph = _LeafTracer().trace(model)
        traced = fx.GraphModule(model, graph)
        ShapeProp(traced).propagate(example)
    finally:
        model.train(was_training)
    sets = _Sets()
    space: dict[fx.Node, int] = {}
    modules = dict(model.named_modules())
    pass_functions = _PASS_THROUGH_FUNCTIONS | _stochastic_depth_functions()

    def channels(node: Any) -> int | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        shape = getattr(meta, "shape", None)
        return int(shape[1]) if shape is not None and len(shape) >= 2 else None

    def tensor_args(node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a in space]

    def opaque(node: fx.Node, reason: str) -> None:
        inputs = tensor_args(node)
        if channels(node) is None and not inputs:
            return
        out = sets.new(node.name, size=channels(node), fixed=reason)
        for a in inputs:
            out = sets.union(out, space[a])
        space[node] = out

    for node in traced.graph.nodes:
        if node.op == "placeholder":
            space[node] = sets.new("input", size=channels(node), fixed="the model input")
        elif node.op == "call_module":
            module = modules[node.target]
            source = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
            if source not in space:
                opaque(node, f"{type(module).__name__} without a traced input")
            elif isinstance(module, nn.modules.conv._ConvNd) and module.transposed is False:
                w = f"{node.target}.weight"
                bias = [(f"{node.target}.bias", 0)] if module.bias is not None else []
                if module.groups == 1:
                    sets.add(space[source], [(w, 1)])
                    space[node] = sets.new(node.target, [(w, 0), *bias], module.out_channels)
                elif module.groups == module.in_channels == module.out_channels:  # depthwise
                    space[node] = sets.add(space[source], [(w, 0), *bias])
                else:
                    opaque(node, f"grouped convolution {node.target}")
                    sets.add(space[node], [(w, 0), (w, 1), *bias])
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                names = ("weight", "bias", "running_mean", "running_var")
                members = [(f"{node.target}.{t}", 0) for t in names if getattr(module, t, None) is not None]
                space[node] = sets.add(space[source], members)
            elif isinstance(module, nn.Linear) and len(source.meta["tensor_meta"].shape) == 2:
                bias = [(f"{node.target}.bias", 0)] if module.bias is not None else []
                sets.add(space[source], [(f"{node.target}.weight", 1)])
                space[node] = sets.new(node.target, [(f"{node.target}.weight", 0), *bias], module.out_features)
            elif isinstance(module, _PASS_THROUGH_MODULES):
                space[node] = space[source]
            elif isinstance(module, nn.Flatten) and _flattens_to_channels(source, module.start_dim):
                space[node] = space[source]
            else:
                opaque(node, f"{type(module).__name__} at {node.target}")
        elif node.op in ("call_function", "call_method"):
            inputs = tensor_args(node)
            target = node.target
            if not inputs:
                continue  # sizes, shapes and constants carry no channels
            if target in pass_functions or (node.op == "call_method" and target in _PASS_THROUGH_METHODS):
                space[node] = space[node.args[0]] if node.args[0] in space else space[inputs[0]]
            elif target in _ELEMENTWISE or (node.op == "call_method" and target in ("add", "mul", "sub")):
                wide = [a for a in inputs if (channels(a) or 1) > 1]
                out = space[(wide or inputs)[0]]
                for a in wide[1:]:
                    out = sets.union(out, space[a])
                space[node] = out
            elif _is_spatial_mean(node):  # a global average pool written as x.mean((2, 3))
                space[node] = space[node.args[0]]
            elif (target is torch.flatten or (node.op == "call_method" and target == "flatten")) and (
                _flattens_to_channels(node.args[0], _arg(node, 1, "start_dim", 0))
            ):
                space[node] = space[node.args[0]]
            else:
                name = getattr(target, "__name__", str(target))
                opaque(node, f"{name} ({node.name})")
        elif node.op == "output":
            outputs = node.all_input_nodes
            for out in outputs:
                if out in space:
                    sets.fix(space[out], "the model output")

    groups: list[ChannelGroup] = []
    seen: set[int] = set()
    for i in range(len(sets.parent)):
        root = sets.find(i)
        if root in seen:
            continue
        seen.add(root)
        fixed = sets.fixed[root]
        groups.append(
            ChannelGroup(
                name=sets.name[root],
                channels=sets.size[root] or 0,
                members=tuple(sets.members[root]),
                kind="traced",
                fixed=_reasons(fixed),
            )
        )
    return tuple(g for g in groups if g.members)


def _reasons(reasons: list[str]) -> str | None:
    unique = list(dict.fromkeys(reasons))
    if not unique:
        return None
    more = f" and {len(unique) - 3} more" if len(unique) > 3 else ""
    return "; ".join(unique[:3]) + more


def _is_spatial_mean(node: fx.Node) -> bool:
    if not (node.target is torch.mean or (node.op == "call_method" and node.target == "mean")):
        return False
    dims = _arg(node, 1, "dim", None)
    return isinstance(dims, list | tuple) and sorted(int(d) for d in dims) == [2, 3]


def _arg(node: fx.Node, position: int, name: str, default: Any) -> Any:
    return node.args[position] if len(node.args) > position else node.kwargs.get(name, default)


def _flattens_to_channels(node: Any, start_dim: Any) -> bool:
    """``flatten(x, 1)`` of an ``N x C x 1 x 1`` map keeps the channel index as the feature index."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return start_dim == 1 and shape is not None and all(int(s) == 1 for s in shape[2:])


def model_structure(model: nn.Module) -> ModelStructure:
    """The structure any effnet model publishes (EfficientNet and the baselines alike)."""
    if not hasattr(model, "structure"):
        raise TypeError(f"{type(model).__name__} does not publish its structure")
    return model.structure()
