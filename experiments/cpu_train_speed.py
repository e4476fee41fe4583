"""Training speed and peak memory on a CPU, side by side: the original's recipe against ours.

Each configuration trains on the training sections of one her2st fold (C3-C6, 723 spots; the
same genes and normalisation as ``mclstexp run her2st``) through the package's own training step
(:func:`mclstexp.train.setup_training`, :func:`mclstexp.train.epoch_data`,
:func:`mclstexp.train.train_step`), in a fresh subprocess so that its peak RSS is its own. It
reports:

- ``setup_s``: building the model and what training needs before the first step (for the
  stage cache: the frozen front of every training patch in its 8 views, computed once);
- ``spots_per_s``: training spots per second over ``--steps`` steps after one warm-up step;
- ``epoch_s_15``: the cost of 15 epochs including the setup, per epoch (what a fold pays);
- ``peak_rss_mb``: the process's peak resident memory (``ru_maxrss``), torch included;
- the 1-minute load average before and after (the machine is shared: compare ratios measured
  in one run, not numbers from different runs).

Results go to ``--out`` (JSON, one entry per configuration; a configuration already there is
not re-measured unless ``--rerun``), so the table can be reproduced and extended:

    MCLSTEXP_NUM_THREADS=2 nice -n 10 python experiments/cpu_train_speed.py \\
        --root ../shared/data/her2st --out runs/cpu_speed.json

Configurations (``--configs``, default all): see ``CONFIGS``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORIGINAL = str(HERE / "presets" / "original_resnet18.json")

#: name -> (preset, overrides). ``original`` is the issue's reference recipe.
CONFIGS: dict[str, tuple[str, dict]] = {
    "original_224": (ORIGINAL, {}),
    "original_224_compact": (ORIGINAL, {"model__compact_positions": True}),
    "original_112_compact": (
        ORIGINAL,
        {"model__compact_positions": True, "model__input_size": 112},
    ),
    "cpu_frozen_224": ("cpu", {}),
    "cpu_e2e_224_l4": (
        "cpu",
        {
            "train__freeze_backbone": False,
            "model__trained_stages": 1,
            "train__stage_cache": True,
        },
    ),
    "cpu_e2e_112_l4": (
        "cpu",
        {
            "train__freeze_backbone": False,
            "model__trained_stages": 1,
            "model__input_size": 112,
            "train__stage_cache": True,
        },
    ),
    "cpu_e2e_112_l34": (
        "cpu",
        {
            "train__freeze_backbone": False,
            "model__trained_stages": 2,
            "model__input_size": 112,
            "train__stage_cache": True,
        },
    ),
    "cpu_e2e_112_l4_augment": (
        "cpu",
        {
            "train__freeze_backbone": False,
            "model__trained_stages": 1,
            "model__input_size": 112,
        },
    ),
}


def _sections(root: str, patch_dir: str) -> list:
    """The training sections of the her2st fold that holds out C2, as ``train_fold`` builds
    them (expression normalisation is set per configuration by the caller)."""
    from mclstexp._keys import section_id
    from mclstexp.workflow import load_dataset
    from mclstexp.workflow.experiment import tile_dataset
    from mclstexp.workflow.fold import select_fold_genes

    dataset = load_dataset("her2st", root=root)
    caches = tile_dataset(dataset, patch_dir, progress=False)
    train = [a for a in dataset.sections if section_id(a) != "C2"]
    return [train, caches, select_fold_genes(dataset, train)]


def worker(name: str, root: str, patch_dir: str, steps: int) -> dict:
    """Measure one configuration in this process."""
    import warnings

    warnings.simplefilter("ignore")
    import tempfile

    import torch

    from mclstexp._keys import section_id
    from mclstexp.models import load_preset
    from mclstexp.train import TrainingSection
    from mclstexp.train.loop import epoch_data, train_step
    from mclstexp.train.setup import setup_training
    from mclstexp.workflow.fold import normalized

    threads = int(os.environ.get("MCLSTEXP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    preset_name, overrides = CONFIGS[name]
    train, caches, genes = _sections(root, patch_dir)
    preset = load_preset(preset_name, **overrides)
    flavor = preset.train.expression_normalization
    sections = [
        TrainingSection(normalized(a, genes, flavor), caches[section_id(a)].patches) for a in train
    ]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = setup_training(sections, preset, run_dir=tmp, device="cpu", progress=False)
        data = epoch_data(run)
        from mclstexp.train.loader import epoch_keys

        keys = epoch_keys(data.plan, run.seed, 0)
        data.keys.keys = keys
        setup_s = time.perf_counter() - t0
        run.net.train()
        times, spots = [], []
        for step, batch in enumerate(data.loader):
            if step > steps:
                break
            s0 = time.perf_counter()
            float(train_step(run, data, batch, keys[step][0]))
            times.append(time.perf_counter() - s0)
            spots.append(int(batch["mask"].sum()))
    n_train = sum(s.n_obs for s in sections)
    rate = sum(spots[1:]) / max(sum(times[1:]), 1e-9)
    return {
        "config": name,
        "preset": preset_name,
        "overrides": overrides,
        "threads": threads,
        "setup_s": round(setup_s, 2),
        "steps_measured": len(times) - 1,
        "spots_per_s": round(rate, 2),
        "epoch_s_15": round((setup_s + 15 * n_train / rate) / 15, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_before": round(load0, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/her2st", help="her2st data folder")
    parser.add_argument("--patch-dir", default="runs/her2st_patches", help="patch caches")
    parser.add_argument("--out", type=Path, default=Path("runs/cpu_speed.json"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args.patch_dir, args.steps)))
        return
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for name in args.configs:
        if name in results and not args.rerun:
            continue
        cmd = [sys.executable, __file__, "--worker", name, "--root", args.root]
        cmd += ["--patch-dir", args.patch_dir, "--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            results[name] = {"config": name, "error": proc.stderr[-2000:]}
        else:
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(json.dumps(results[name]), flush=True)
    ref = results.get("original_224", {}).get("spots_per_s")
    print(f"\n{'config':28s} {'spots/s':>8s} {'x orig':>7s} {'setup s':>8s} {'RSS MB':>8s} load")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:28s} failed: {r['error'].splitlines()[-1]}")
            continue
        ratio = f"{r['spots_per_s'] / ref:.1f}" if ref else "-"
        print(
            f"{name:28s} {r['spots_per_s']:8.1f} {ratio:>7s} {r['setup_s']:8.1f} "
            f"{r['peak_rss_mb']:8.0f} {r['load_before']:.1f}-{r['load_after']:.1f}"
        )


if __name__ == "__main__":
    main()
