"""Architectures: config rows and scaling, blocks, the EfficientNet module, baselines, structure, surgery.

Names are imported on first use, so importing one light module of this package (e.g. the
architecture table) does not import PyTorch.
"""

from __future__ import annotations

from effnet._lazy import lazy_exports

_WHERE = {
    "BASELINES": "effnet.models.baselines",
    "BlockSpec": "effnet.models.config",
    "ChannelGroup": "effnet.models.structure",
    "ConvBnAct": "effnet.models.blocks",
    "EfficientNet": "effnet.models.efficientnet",
    "EfficientNetConfig": "effnet.models.config",
    "FeatureInfo": "effnet.models.structure",
    "Layout": "effnet.models.config",
    "MBConv": "effnet.models.blocks",
    "MODEL_CONFIGS": "effnet.models.config",
    "ModelStructure": "effnet.models.structure",
    "StageInfo": "effnet.models.structure",
    "StageSpec": "effnet.models.config",
    "build_baseline": "effnet.models.baselines",
    "count_flops": "effnet.models.summary",
    "count_params": "effnet.models.summary",
    "custom_config": "effnet.models.scaling",
    "get_config": "effnet.models.config",
    "is_baseline": "effnet.models.baselines",
    "keep_channels": "effnet.models.surgery",
    "layout_cost": "effnet.models.summary",
    "make_divisible": "effnet.models.scaling",
    "model_info": "effnet.models.summary",
    "resolve_layout": "effnet.models.scaling",
    "resolve_stages": "effnet.models.scaling",
    "scaled_config": "effnet.models.scaling",
    "trace_channel_groups": "effnet.models.structure",
}

__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
