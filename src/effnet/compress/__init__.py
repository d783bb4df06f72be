"""Compression as passes: a config in, a new model and a report out; passes chain.

>>> import effnet
>>> from effnet.compress import apply_pass, list_passes
>>> "fold_batchnorm" in list_passes()
True
"""

from effnet.compress import inference as _inference  # noqa: F401 - registers the inference passes
from effnet.compress import lite as _lite  # noqa: F401 - registers the lite swap
from effnet.compress import prune as _prune  # noqa: F401 - registers the pruning passes
from effnet.compress import quantize as _quantize  # noqa: F401 - registers the quantize pass
from effnet.compress import sparsity as _sparsity  # noqa: F401
from effnet.compress.base import (
    ModelStats,
    Pass,
    PassConfig,
    PassContext,
    PassReport,
    apply_pass,
    get_pass,
    list_passes,
    pass_config_from_dict,
    rebuild_structure,
    register_pass,
)
from effnet.compress.inference import FoldBatchNormConfig, FreezePaddingConfig
from effnet.compress.lite import LiteSwapConfig, swap_and_recover
from effnet.compress.prune import PruneChannelsConfig
from effnet.compress.qat import FakeQuantCallback
from effnet.compress.quantize import QuantizeConfig
from effnet.compress.sensitivity import prune_sensitivity, ratios_for_target, suggest_ratios
from effnet.compress.sparsity import PruneWeightsConfig, SparsityCallback

__all__ = [
    "FakeQuantCallback",
    "FoldBatchNormConfig",
    "FreezePaddingConfig",
    "LiteSwapConfig",
    "ModelStats",
    "Pass",
    "PassConfig",
    "PassContext",
    "PassReport",
    "PruneChannelsConfig",
    "PruneWeightsConfig",
    "QuantizeConfig",
    "SparsityCallback",
    "apply_pass",
    "get_pass",
    "list_passes",
    "pass_config_from_dict",
    "prune_sensitivity",
    "ratios_for_target",
    "rebuild_structure",
    "register_pass",
    "suggest_ratios",
    "swap_and_recover",
]
