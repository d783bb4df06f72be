"""The EfficientNet network (Tan & Le, 2019, https://arxiv.org/abs/1905.11946).

One module serves the whole family: its shape comes from an
:class:`~effnet.models.config.EfficientNetConfig` through :mod:`effnet.models.scaling`.
The network is built from the config's resolved :class:`~effnet.models.config.Layout` (every
block's widths), so a network whose channels were changed block by block is an EfficientNet
like any other. The module publishes its structure (``stem_name``, ``classifier_name``,
``feature_info``, :meth:`EfficientNet.structure` with the coupled channel groups) so training,
pruning and export find the layers they need without guessing.
"""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.blocks import ConvBnAct, MBConv
from effnet.models.config import EfficientNetConfig
from effnet.models.scaling import resolve_layout
from effnet.models.structure import FeatureInfo, ModelStructure, efficientnet_structure


class EfficientNet(nn.Module):
    """EfficientNet from a config; ``forward`` returns logits, or feature maps if ``features_only``.

    >>> from effnet.models.config import get_config
    >>> model = EfficientNet(get_config("efficientnet_b0"))
    >>> model(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """

    stem_name = "stem.conv"
    classifier_name = "classifier"

    def __init__(self, config: EfficientNetConfig, features_only: bool = False) -> None:
        super().__init__()
        self.config = config
        self.features_only = features_only
        norm = {"padding": config.padding, "bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}
        act = config.activation
        layout = resolve_layout(config)
        self.layout = layout
        self.stem = ConvBnAct(config.in_chans, layout.stem_channels, 3, stride=2, activation=act, **norm)

        total_blocks = len(layout.blocks)
        stride = 2  # the stem halves the input
        stages: list[list[nn.Module]] = [[] for _ in range(layout.num_stages)]
        features: list[FeatureInfo] = []
        for index, spec in enumerate(layout.blocks):
            # Stochastic depth grows linearly with depth (Huang et al., 2016).
            drop_path = config.drop_path * index / total_blocks
            stages[spec.stage].append(MBConv(spec, act, drop_path, **norm))
        for index, blocks in enumerate(stages):
            stride *= blocks[0].spec.stride
            out_channels = blocks[-1].spec.out_channels
            if features and features[-1].stride == stride:
                features[-1] = FeatureInfo(index, out_channels, stride)
            else:
                features.append(FeatureInfo(index, out_channels, stride))
        self.stages = nn.Sequential(*(nn.Sequential(*blocks) for blocks in stages))
        self.feature_info: tuple[FeatureInfo, ...] = tuple(features)

        self.num_features = layout.head_channels
        if features_only:
            self.head = None
            self.classifier = None
        else:
            last = layout.blocks[-1].out_channels
            self.head = ConvBnAct(last, self.num_features, 1, activation=act, **norm)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(config.dropout)
            self.classifier = nn.Linear(self.num_features, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Variance scaling for convolutions, as the reference implementations; it matters when
        # training from scratch.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                _init_classifier(m)

    @property
    def num_classes(self) -> int:
        return 0 if self.classifier is None else self.classifier.out_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` classes."""
        if self.features_only:
            raise ValueError("a features_only model has no classifier")
        self.classifier = nn.Linear(self.num_features, num_classes)
        _init_classifier(self.classifier)
        self.config = self.config.replace(num_classes=num_classes)

    def arch_dict(self) -> dict:
        """The architecture as plain data, stored with checkpoints so they rebuild themselves.

        The layout is always written out block by block, so a network whose widths no longer
        follow the scaling table (a pruned one) reloads exactly.
        """
        return self.config.replace(layout=self.layout).to_dict()

    def structure(self) -> ModelStructure:
        """Stem, classifier, stages and the coupled channel groups (see :mod:`effnet.models.structure`)."""
        num_classes = self.classifier.out_features if self.classifier is not None else None
        return efficientnet_structure(self.layout, self.config.in_chans, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, after the head convolution (before pooling)."""
        x = self.stages(self.stem(x))
        return self.head(x) if self.head is not None else x

    def forward_pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16 and 32 (see ``feature_info``)."""
        taps = {f.stage for f in self.feature_info}
        outputs = []
        x = self.stem(x)
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in taps:
                outputs.append(x)
        return outputs

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pool, dropout and classify the output of :meth:`forward_features`."""
        return self.classifier(self.dropout(torch.flatten(self.pool(features), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_pyramid(x)
        return self.forward_head(self.forward_features(x))


def _init_classifier(linear: nn.Linear) -> None:
    # Uniform in +-1/sqrt(fan_in). The TF reference scales by 1/sqrt(num_classes) instead, which
    # is fine for 1000 classes but gives huge initial logits for a 3-class head.
    bound = 1.0 / linear.in_features**0.5
    nn.init.uniform_(linear.weight, -bound, bound)
    nn.init.zeros_(linear.bias)
