"""Cross-layer equalization on pretrained EfficientNet-Lite0: what it does for int8 (not a test).

Cross-layer equalization (CLE; Nagel et al., 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", https://arxiv.org/abs/1906.04721, §4.1) rescales each output
channel ``i`` of a convolution by ``1/s_i`` and the matching input channel of the next one by
``s_i``, so both have the weight range ``sqrt(r1_i * r2_i)``. The network computes the same
function only if the activation between them is positively homogeneous, ``f(x/s) = f(x)/s``:
ReLU is, ReLU6 is not (its clip at 6 would move to ``6/s_i``). So, as AIMET does, the network
first gets ReLU for ReLU6, which changes its outputs; this script measures that change and what
CLE adds on top, on the real-photo benchmark of ``benchmarks/quantize_photos.py`` (same 46 inputs,
138 calibration crops and 230 held-out crops; every row compared with the float ReLU6 network).

Pairs equalized, with the batch norms kept (an output channel's scale goes into its batch norm's
``gamma`` and ``beta``; ranges are those of the folded weights): in every block the expansion and
the depthwise convolution, the depthwise and the projection, and the stem with stage 0's
depthwise convolution; repeated over the network until the scales settle. Per-channel int8
weights (effnet's default) already give every output channel its own scale, so CLE can only help
the projections' input channels and the activations; per-tensor weights, its original target, are
measured too. Unbounded scales are also run with each scale held within [1/8, 8], since a channel
with near-zero weights otherwise gets a near-zero scale and a huge activation from its bias (the
paper's "high bias absorption" is not implemented here).

    OMP_NUM_THREADS=1 python benchmarks/quantize_cle.py
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from quantize_photos import photo_sets
from torch import nn

import effnet
from effnet.compress.quantize import QuantizeConfig, quantize_onnx
from effnet.export import export_model
from effnet.export.onnx_module import OnnxModule
from effnet.weights.specs import Preprocessing


def with_relu(model: nn.Module) -> nn.Module:
    """A copy with every ReLU6 replaced by ReLU."""
    import copy

    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, nn.ReLU(inplace=True))
    return out


def _gain(unit: nn.Module) -> torch.Tensor:
    bn = unit.bn
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(producer, consumer) ConvBnAct pairs with a ReLU between them."""
    pairs = []
    for stage_index, stage in enumerate(model.stages):
        for block_index, block in enumerate(stage):
            if block.expand is not None and not isinstance(block.expand, nn.Identity):
                pairs.append((block.expand, block.dw))
            elif stage_index == 0 and block_index == 0:
                pairs.append((model.stem, block.dw))
            pairs.append((block.dw, block.project))
    return pairs


@torch.no_grad()
def equalize(model: nn.Module, rounds: int = 20, limit: float | None = None) -> nn.Module:
    """Cross-layer equalization of a ReLU network's pairs (a copy); its function is unchanged.

    ``limit`` bounds every channel's scale, over all rounds, to ``[1/limit, limit]``: unbounded, a
    channel whose weights are near zero gets ``s`` near zero and its bias, divided by ``s``, an
    enormous activation."""
    import copy

    out = copy.deepcopy(model).eval()
    total = {}  # pair index -> product of the scales applied so far (what ``limit`` bounds)
    for _ in range(rounds):
        for index, (first, second) in enumerate(_pairs(out)):
            w1 = first.conv.weight * _gain(first).view(-1, 1, 1, 1)  # folded, per output channel
            r1 = w1.abs().flatten(1).amax(1)
            w2 = second.conv.weight * _gain(second).view(-1, 1, 1, 1)
            if second.conv.groups > 1:  # depthwise: input channel i is output channel i
                r2 = w2.abs().flatten(1).amax(1)
            else:
                r2 = w2.abs().transpose(0, 1).flatten(1).amax(1)
            scale = torch.sqrt(r1 * r2).clamp_min(1e-12) / r2.clamp_min(1e-12)  # s_i: r1/s = r2*s
            if limit is not None:
                before = total.get(index, torch.ones_like(scale))
                total[index] = (before * scale).clamp(1.0 / limit, limit)
                scale = total[index] / before
            first.bn.weight /= scale
            first.bn.bias /= scale
            if second.conv.groups > 1:
                second.conv.weight *= scale.view(-1, 1, 1, 1)
            else:
                second.conv.weight *= scale.view(1, -1, 1, 1)
    return out


def ranges(model: nn.Module) -> float:
    """Mean over the pairs' layers of max/median of the folded per-channel weight ranges."""
    spreads = []
    for first, _ in _pairs(model):
        r = (first.conv.weight * _gain(first).view(-1, 1, 1, 1)).abs().flatten(1).amax(1)
        spreads.append((r.max() / r.median()).item())
    return float(np.mean(spreads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = effnet.create_model(args.model, weights="imagenet").eval()
    pre = Preprocessing.from_dict(model.pretrained_meta["preprocessing"])
    inputs, calibration, held_out = photo_sets(pre)

    relu = with_relu(model)
    cle, bounded = equalize(relu), equalize(relu, limit=8.0)
    print(
        f"weight range spread (max/median over output channels, mean over the {len(_pairs(model))} producers): "
        f"ReLU6 {ranges(model):.1f}, after CLE {ranges(cle):.1f}, with scales in [1/8, 8] {ranges(bounded):.1f}",
        file=sys.stderr,
    )
    networks = {
        "ReLU6 (the network)": model,
        "ReLU for ReLU6": relu,
        "ReLU for ReLU6, CLE": cle,
        "ReLU for ReLU6, CLE with scales in [1/8, 8]": bounded,
    }
    configs = {
        "float": None,
        "int8 (default: per-channel, bias correction)": QuantizeConfig(),
        "int8, no bias correction": QuantizeConfig(bias_correction=False),
        "int8, per-tensor weights, bias correction": QuantizeConfig(per_channel=False),
        "int8, per-tensor weights, no bias correction": QuantizeConfig(per_channel=False, bias_correction=False),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="effnet-cle-") as work:
        files = {}
        for name, network in networks.items():
            float_path = Path(work) / f"{len(files)}.onnx"
            export_model(network, "onnx", float_path, img_size=pre.input_size)
            for label, config in configs.items():
                if config is None:
                    files[(name, label)] = float_path
                    continue
                path = Path(work) / f"{len(files)}.onnx"
                with contextlib.redirect_stdout(sys.stderr):
                    quantize_onnx(float_path, path, config, calibration)
                files[(name, label)] = path
        reference = OnnxModule(files[("ReLU6 (the network)", "float")])
        ref_in, ref_held = reference(inputs), reference(held_out)
        own = {name: OnnxModule(files[(name, "float")])(held_out) for name in networks}
        for (name, label), path in files.items():
            session = OnnxModule(path)
            out, held = session(inputs), session(held_out)
            agree = (out.argmax(1) == ref_in.argmax(1)).float().mean().item() * 100
            held_agree = (held.argmax(1) == ref_held.argmax(1)).float().mean().item() * 100
            own_agree = (held.argmax(1) == own[name].argmax(1)).float().mean().item() * 100
            log_p, log_q = own[name].double().log_softmax(1), held.double().log_softmax(1)
            kl = (log_p.exp() * (log_p - log_q)).sum(1).mean().item()
            rows.append((name, label, agree, held_agree, own_agree, kl))
    print(f"\n{args.model} ImageNet weights, {len(inputs)} inputs, {len(calibration)} calibration crops\n")
    print(
        f"| network | model | agrees with the ReLU6 float (46) | with the ReLU6 float ({len(held_out)} held-out) "
        "| with its own float (held-out) | KL from its own float (held-out) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for name, label, agree, held_agree, own_agree, kl in rows:
        print(f"| {name} | {label} | {agree:.1f}% | {held_agree:.1f}% | {own_agree:.1f}% | {kl:.4f} |")


if __name__ == "__main__":
    main()
