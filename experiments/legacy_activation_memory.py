"""Why the original recipe cannot train in 2 GB on a CPU: the activations of one step.

The original recipe (ResNet-18 trained whole, 224 px, batch 128, fp32; see
``experiments/presets/original_resnet18.json``) peaks at 4.60 GB with compact position tables
(``experiments/cpu_train_speed.py``). This measures one forward + backward of the bare backbone
at that size, in a fresh process per mode, as the rise of ``ru_maxrss`` over the process's RSS
before the step (torch, the model and the input batch):

- ``plain``: as trained;
- ``timm``: timm's own activation recomputation (``set_grad_checkpointing``: every residual
  block recomputed in backward, the stem kept);
- ``all``: the stem and every block recomputed (the least activation memory without cutting the
  batch; BatchNorm normalises over the whole batch, so chunking the batch changes the model).

Reproduces the "legacy recipe memory" paragraph of ``docs/cpu_preset.md``::

    python experiments/legacy_activation_memory.py    # about 2 minutes on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys

MODES = ("plain", "timm", "all")


def measure(mode: str) -> dict[str, float]:
    """One step of ResNet-18 (batch 128, 224 px, channels_last) in ``mode``; MB of RSS."""
    import resource
    import time

    import timm
    import torch
    from torch.utils.checkpoint import checkpoint

    model = timm.create_model("resnet18", num_classes=0).to(memory_format=torch.channels_last)
    x = torch.rand(128, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if mode == "timm":
        model.set_grad_checkpointing(True)
    if mode == "all":
        stem = torch.nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        h = checkpoint(stem, x, use_reentrant=False)
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            for block in layer:
                h = checkpoint(block, h, use_reentrant=False)
        out = model.forward_head(h, pre_logits=True)
    else:
        out = model(x)
    out.square().mean().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"base_mb": base, "step_mb": peak - base, "seconds": time.perf_counter() - started}


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1] in MODES:  # the child
        print(json.dumps(measure(sys.argv[1])))
        return
    print(f"{'mode':<6} {'RSS before (MB)':>16} {'step adds (MB)':>15} {'seconds':>8}")
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, mode], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:<6} {r['base_mb']:>16.0f} {r['step_mb']:>15.0f} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
