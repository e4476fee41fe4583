"""``mclstexp bench gpu``: the one prepared device check, under a wall-clock budget it enforces.

In one process, in this order (most informative first, so a short budget still says the most):
environment; parity of the device augmentation with the CPU kernel and of one fp32 training step
on the CPU and the device; training throughput of the ``paper`` (DenseNet-121, batch-as-sequence,
65,536-row tables) and ``default`` presets at fp32, bf16 and fp16 with the grad scaler; the
training loader's throughput (RAM and lazy Zarr, N workers) against it; embedding and exact
top-k (native CPU against torch on the device); a process group of one rank through the gather
and DDP; a real small ``run_experiment`` on the synthetic data; last, the ``default`` preset under
``torch.compile``. A step that would not fit the remaining budget is skipped and says so; a
step that fails records its error and the others still run. Results go to ``gpu.json`` and a
short table (``gpu.txt``) as each step ends, so a run cut short keeps what it measured.

``smoke=True`` runs every step with tiny sizes (a test network, 32 px patches): on a CPU in well
under a minute, so the check cannot rot between GPU sessions (tests/test_bench_gpu.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GpuBench", "format_gpu_table", "run_gpu_bench"]


@dataclass
class GpuBench:
    """The state of one check: budget, sizes, output and the results so far."""

    device: Any
    smoke: bool
    budget_s: float
    out_dir: Path
    log: Callable[[str], Any] = print
    epochs: int | None = None
    started: float = field(default_factory=time.perf_counter)
    results: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left of the budget."""
        return self.budget_s - (time.perf_counter() - self.started)

    def step(self, name: str, needs_s: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` as step ``name`` if ``needs_s`` seconds are left; record its result, its
        error, or why it was skipped; write the outputs."""
        if self.remaining() < needs_s:
            self.results[name] = {
                "skipped": f"budget: {self.remaining():.0f} s left, needs {needs_s:.0f}"
            }
            self.log(f"[{name}] skipped (budget)")
            self._write()
            return
        t0 = time.perf_counter()
        try:
            value = fn()
            self.results[name] = {"result": value, "seconds": round(time.perf_counter() - t0, 1)}
            self.log(f"[{name}] {time.perf_counter() - t0:.1f} s: {_short(value)}")
        except Exception as exc:  # one failing measurement must not lose the others
            self.results[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            self.log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
        self._write()

    def _write(self) -> None:
        payload = {
            "smoke": self.smoke,
            "budget_s": self.budget_s,
            "elapsed_s": round(time.perf_counter() - self.started, 1),
            "steps": self.results,
        }
        (self.out_dir / "gpu.json").write_text(json.dumps(payload, indent=1, default=str))
        (self.out_dir / "gpu.txt").write_text(format_gpu_table(self.results) + "\n")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) < 240 else text[:237] + "..."


def run_gpu_bench(
    *,
    device: str = "cuda",
    out_dir: str | Path = "runs/gpu",
    budget_s: float = 420.0,
    smoke: bool = False,
    epochs: int | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the GPU check (module docstring) and write ``gpu.json`` and ``gpu.txt`` to ``out_dir``.

    Parameters
    ----------
    device
        ``"cuda"`` (the check proper) or ``"cpu"`` (with ``smoke``, the CI check of the script).
    out_dir
        Output folder.
    budget_s
        Wall-clock budget of the whole check in seconds (>= 0); steps that would not fit are
        skipped.
    smoke
        Tiny sizes everywhere (a test network, 32 px patches, a few spots).
    epochs
        Epochs of the end-to-end run, >= 1 (default: the preset's; smoke: 2).
    log
        Where progress lines go.

    Returns
    -------
    dict
        Step name -> ``{"result": ...}``, ``{"error": ...}`` or ``{"skipped": ...}``.

    Examples
    --------
    >>> res = run_gpu_bench(device="cpu", smoke=True, out_dir="gpu")  # doctest: +SKIP
    >>> res["parity_augment"]["result"]["ok"]  # doctest: +SKIP
    True
    """
    if not float(budget_s) >= 0:  # NaN too
        raise ValueError(f"budget_s: must be a number of seconds >= 0, got {budget_s}")
    if epochs is not None and (isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1):
        raise ValueError(f"epochs: must be >= 1 (or omitted for the preset's), got {epochs}")
    import torch

    from mclstexp.models.runtime import resolve_device
    from mclstexp.workflow import gpu_checks as G

    dev = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bench = GpuBench(dev, smoke, float(budget_s), out, log, epochs)
    sizes = G.Sizes.smoke() if smoke else G.Sizes.full()
    s = 0.05 if smoke else 1.0  # scale of the time each step needs
    bench.step("environment", 0, lambda: G.environment(dev))
    bench.step("parity_augment", 5 * s, lambda: G.augment_parity(dev, sizes))
    bench.step("parity_step", 40 * s, lambda: G.step_parity(dev, sizes))
    precisions = list(G.PRECISIONS) if dev.type == "cuda" else ["fp32"]
    for preset in ("paper", "default"):
        for precision in precisions:
            bench.step(
                f"train_{preset}_{precision}",
                20 * s,
                lambda p=preset, q=precision: G.train_throughput(p, q, dev, sizes),
            )
    with tempfile.TemporaryDirectory(prefix="mclstexp-gpu-loader-") as tmp:
        for source in ("ram", "zarr"):
            for workers in sizes.workers:
                bench.step(
                    f"loader_{source}_w{workers}",
                    15 * s,
                    lambda a=source, w=workers: G.loader_throughput(
                        a, w, False, dev, sizes, Path(tmp)
                    ),
                )
        w = sizes.workers[-1]
        bench.step(
            f"loader_ram_w{w}_augment",
            15 * s,
            lambda: G.loader_throughput("ram", w, True, dev, sizes, Path(tmp)),
        )
    bench.step("embed_retrieval", 30 * s, lambda: G.embed_and_retrieve(dev, sizes))
    bench.step("ddp_gather", 10 * s, lambda: G.ddp_gather(dev))
    bench.step("end_to_end", 120 * s, lambda: _end_to_end(bench, dev, smoke))
    if dev.type == "cuda" or smoke:
        bench.step(
            "train_default_bf16_compiled",
            150 * s,
            lambda: G.train_throughput(
                "default", "bf16" if dev.type == "cuda" else "fp32", dev, sizes, compile=True
            ),
        )
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    log(format_gpu_table(bench.results))
    return bench.results


def _end_to_end(bench: GpuBench, dev: Any, smoke: bool) -> dict[str, Any]:
    """``mclstexp run --preset default --device cuda`` for one fold on the synthetic data."""
    # the data, caches and checkpoints go to a temporary folder: out_dir keeps the results only
    with tempfile.TemporaryDirectory(prefix="mclstexp-gpu-run-") as tmp:
        return _run_one_fold(bench, dev, smoke, Path(tmp))


def _run_one_fold(bench: GpuBench, dev: Any, smoke: bool, tmp: Path) -> dict[str, Any]:
    from mclstexp.workflow.dataset import load_dataset
    from mclstexp.workflow.experiment import run_experiment

    sizes = {"n_sections": 3, "n_spots": 60} if smoke else {"n_sections": 4, "n_spots": 200}
    dataset = load_dataset("synthetic", root=tmp / "synthetic", **sizes)
    epochs = bench.epochs if bench.epochs is not None else (2 if smoke else None)
    t0 = time.perf_counter()
    # smoke: a tiny network on a CPU, the same code path in seconds
    preset = str(_smoke_preset(tmp)) if smoke else "default"
    result = run_experiment(
        dataset,
        out_dir=tmp / "run",
        presets=[preset],
        holdout=[dataset.section_names[0]],
        device=str(dev),
        epochs=epochs,
        plots=False,
        progress=False,
        log=lambda _: None,
    )
    rows = [r for r in result.records if r["target"] == "default"]
    return {
        "wall_s": round(time.perf_counter() - t0, 1),
        "epochs": epochs or "preset",
        "train_s": round(sum(r["train_seconds"] for r in result.runs), 1),
        "spots_per_s": round(sum(r["spots_per_second"] for r in result.runs) / len(result.runs), 1),
        "pcc_acg": {r["method"]: round(float(r["acg"]), 3) for r in rows},
        "table": result.table,
    }


def _smoke_preset(folder: Path) -> Path:
    """The ``default`` preset with a test network (a JSON preset file)."""
    from mclstexp.models import load_preset

    m, t = load_preset("default")
    model = {**m.to_dict(), "backbone": "test_resnet"}
    path = folder / "default_smoke.json"
    path.write_text(json.dumps({"model": model, "train": t.to_dict()}))
    return path


def format_gpu_table(results: dict[str, Any]) -> str:
    """A short table of the check's results (one line per step).

    Examples
    --------
    >>> print(format_gpu_table({"ddp_gather": {"result": {"ok": True}, "seconds": 0.5}}))
    step                              seconds  result
    ddp_gather                            0.5  ok=True
    """
    lines = [f"{'step':<32} {'seconds':>8}  result"]
    for name, entry in results.items():
        secs = entry.get("seconds", "")
        if "skipped" in entry:
            text = f"skipped ({entry['skipped']})"
        elif "error" in entry:
            text = f"ERROR {entry['error']}"
        else:
            text = _summary(entry["result"])
        lines.append(f"{name:<32} {secs!s:>8}  {text}")
    return "\n".join(lines)


_KEYS = (
    "gpu",
    "torch",
    "cuda",
    "free_gib",
    "native_simd",
    "spots_per_s",
    "peak_gib",
    "compile_s",
    "batches_per_s",
    "max_abs_diff",
    "fraction_differing",
    "max_relative_diff",
    "embed_images_per_s",
    "native_cpu_s",
    "torch_device_s",
    "neighbour_overlap",
    "backend",
    "loss_diff",
    "grad_max_diff",
    "wall_s",
    "train_s",
    "pcc_acg",
    "ok",
)


def _summary(result: Any) -> str:
    if not isinstance(result, dict):
        return str(result)
    parts = [f"{k}={result[k]}" for k in _KEYS if k in result]
    return ", ".join(parts)
