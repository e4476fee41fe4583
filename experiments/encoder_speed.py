"""Frozen-feature extraction speed of the registry's encoders, with random weights (no download).

What ``mclstexp embed`` and the ``fm`` preset spend per patch, by architecture and device: each
registry encoder is built with ``weights=None`` (its card's architecture and output; the weights
do not change the speed), fed uint8 patches of its input size, and its backbone features are
computed as the package computes them (:func:`mclstexp.models.runtime.backbone_features`: batches
under the device's autocast, bf16 on CUDA), timed after a warm-up. On CUDA it also reports how
far the bf16 features are from fp32 ones (cosine similarity over the batch; random weights, so a
statement about arithmetic, not about any model's quality) and the peak GPU memory.

    python experiments/encoder_speed.py --device cuda --out results       # a GPU node
    python experiments/encoder_speed.py --device cpu --encoders h-optimus-0 --n 4 --batch-size 4

Nothing here says how well any encoder predicts expression: that needs the published weights,
which this project could not download.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _bf16_agreement(enc: Any, x: np.ndarray, dev: Any) -> dict[str, float]:
    """Cosine similarity of autocast (bf16) features with fp32 features of the same patches."""
    import torch

    from mclstexp.models.runtime import backbone_features

    fast = backbone_features(enc, x, device=dev, batch_size=len(x))
    with torch.no_grad():
        exact = enc.features(torch.from_numpy(x).to(dev)).float().cpu().numpy()
    num = (fast * exact).sum(1)
    cos = num / (np.linalg.norm(fast, axis=1) * np.linalg.norm(exact, axis=1) + 1e-30)
    return {"bf16_vs_fp32_cos_mean": float(cos.mean()), "bf16_vs_fp32_cos_min": float(cos.min())}


def measure(name: str, device: str, n: int, batch_size: int) -> dict[str, Any]:
    """Patches per second of one encoder's frozen features on ``device``."""
    import torch

    from mclstexp.models import ImageEncoder, encoder_info
    from mclstexp.models.runtime import backbone_features, precision, resolve_device

    dev = resolve_device(device)
    info = encoder_info(name)
    t0 = time.perf_counter()
    enc = ImageEncoder(name, weights=None, normalization="backbone").eval().to(dev)
    build_s = time.perf_counter() - t0
    size = info.input_size
    x = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    backbone_features(enc, x[:batch_size], device=dev, batch_size=batch_size)  # warm-up
    _sync(dev)
    t0 = time.perf_counter()
    feats = backbone_features(enc, x, device=dev, batch_size=batch_size)
    _sync(dev)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "encoder": name,
        "device": str(dev),
        "precision": precision(dev),
        "params_m": round(sum(p.numel() for p in enc.backbone.parameters()) / 1e6, 1),
        "dim": int(feats.shape[1]),
        "input_size": size,
        "batch_size": batch_size,
        "n": n,
        "seconds": seconds,
        "patches_per_s": n / seconds,
        "build_s": build_s,
    }
    if dev.type == "cuda":
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        out.update(_bf16_agreement(enc, x[: min(64, n)], dev))
    del enc
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> None:
    from mclstexp.models import list_encoders

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--encoders", nargs="+", default=list_encoders())
    p.add_argument("--n", type=int, default=1024, help="patches timed per encoder")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, help="folder for encoder_speed.json")
    args = p.parse_args(argv)
    rows = []
    print(f"{'encoder':<13} {'params':>8} {'dim':>5} {'prec':>9} {'patch/s':>9} {'cos bf16':>9}")
    for name in args.encoders:
        r = measure(name, args.device, args.n, args.batch_size)
        rows.append(r)
        cos = r.get("bf16_vs_fp32_cos_min")
        print(
            f"{name:<13} {r['params_m']:>7.1f}M {r['dim']:>5} {r['precision']:>9} "
            f"{r['patches_per_s']:>9.1f} {'' if cos is None else f'{cos:.4f}':>9}",
            flush=True,
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "encoder_speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
