"""The training batch loader: one batch per key, built from sections' patches and spot arrays.

An epoch's keys are ``(augmentation seed, batch)`` pairs (:func:`epoch_keys`): the batch is a list
of attention sequences from :class:`mclstexp.models.inputs.BatchPlan`, the seed is derived from
``(seed, epoch, rank, step)``. :class:`BatchDataset` turns a key into the model's input tensors
(inside DataLoader workers or in the main process); :class:`EpochKeys` is the DataLoader's
sampler, reassigned every epoch so that persistent workers survive across epochs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mclstexp.models.inputs import BatchPlan, batch_sequences
from mclstexp.train.augment import augment_native, draw_augment_params
from mclstexp.train.sections import TrainingSection

__all__ = ["UNIT", "BatchDataset", "EpochKeys", "augment_seed", "epoch_keys"]

#: What the loader hands the model: uint8 (B, H, W, 3) (compact; the model converts on its
#: device) or float32 (B, 3, H, W) in [0, 1] (the model then only applies its mean/std). Both give
#: the same model input bits; ``"unit"`` moves the layout/scale pass into the loader (workers).
#: ``UNIT`` is the ``(mean, std)`` of that [0, 1] scaling.
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class BatchDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Builds one batch (already a list of sequences) per key; used with ``batch_size=None``.

    Images are gathered from each section's patches (RAM-resident: straight into the fused
    augmentation kernel, no intermediate copy; lazy Zarr: direct chunk reads) and, with
    ``augment``, augmented by the native kernel with parameters drawn from the key's seed. Inside
    a DataLoader worker the image batch is allocated in shared memory (no copy on the way to the
    main process) and the kernel runs on one native thread (the workers are the parallelism);
    in the main process it uses ``n_threads`` (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).

    ``reuse_buffers=k`` (main process only) recycles a ring of ``k`` image buffers: a fresh
    77 MB float batch costs more to fault in than to augment on small machines. A returned image
    tensor is then overwritten ``k`` batches later, so only a consumer that is done with a batch
    before it asks for the ``k``-th next one may set it (:func:`mclstexp.train.train_model` with
    ``num_workers=0`` uses 3: one batch in use, none queued).

    Parameters
    ----------
    sections
        The training sections (same genes and patch size).
    augment
        Augment images (colour jitter, flip, rotation) in the loader.
    features
        Frozen-encoder mode: one ``[n_obs, F]`` feature array per section, sent instead of images.
    fronts
        Stage-cache mode: one :class:`~mclstexp.models.stages.FrontOutput` ``(V, n_obs, ...)``
        per section (a partially trained backbone's frozen front in each of V views); each spot
        of a batch gets one view drawn from the key's seed (the augmentation), sent as
        ``"images"`` (the front's map, float32) and ``"front_means"``.
    image_format
        ``"uint8"`` or ``"unit"`` (see :data:`UNIT`).
    n_threads, reuse_buffers
        Native threads in the main process; ring of reused image buffers.

    Examples
    --------
    >>> from mclstexp.train import TrainingSection
    >>> ds = BatchDataset(sections, augment=True, features=None)  # doctest: +SKIP
    >>> ds[(0, [np.array([0, 1, 2])])]["images"].shape  # doctest: +SKIP
    torch.Size([3, 224, 224, 3])
    """

    def __init__(
        self,
        sections: list[TrainingSection],
        *,
        augment: bool,
        features: list[np.ndarray] | None,
        image_format: str = "uint8",
        n_threads: int | None = None,
        reuse_buffers: int = 0,
        fronts: list[Any] | None = None,
    ) -> None:
        if image_format not in ("uint8", "unit"):
            raise ValueError(f"image_format must be 'uint8' or 'unit', got {image_format!r}")
        self.sections = sections
        self.offsets = np.concatenate([[0], np.cumsum([s.n_obs for s in sections])])
        self.expression = np.concatenate([s.expression for s in sections])
        self.positions = np.concatenate([s.positions for s in sections])
        self.augment = augment
        self.image_format = image_format
        self.n_threads = n_threads
        self.reuse_buffers = int(reuse_buffers)
        self._ring: list[torch.Tensor] = []
        self._ring_next = 0
        self.features = None if features is None else np.concatenate(features)
        # kept per section (no concatenated copy: the front cache holds them already)
        self.fronts = None if fronts is None else list(fronts)

    def __len__(self) -> int:  # unused (keys come from the sampler)
        return 0

    def __getitem__(self, key: tuple[int, list[np.ndarray]]) -> dict[str, torch.Tensor]:
        aug_seed, seqs = key
        ids = np.concatenate(seqs)
        expr, pos, mask = batch_sequences(seqs, self.expression, self.positions)
        out = {
            "expression": torch.from_numpy(expr),
            "positions": torch.from_numpy(pos),
            "mask": torch.from_numpy(mask),
        }
        if self.features is not None:
            out["images"] = torch.from_numpy(self.features[ids])
            return out
        if self.fronts is not None:
            out["images"], out["front_means"] = self._fronts(ids, aug_seed)
            return out
        out["images"] = self._images(ids, aug_seed)
        return out

    def _fronts(self, ids: np.ndarray, aug_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The front's map (float32) and pooled means of spots ``ids``, each in one view drawn
        from ``aug_seed``, gathered section by section from the per-section front outputs."""
        first = self.fronts[0]
        gen = torch.Generator().manual_seed(aug_seed)
        views = torch.randint(0, first.activations.shape[0], (len(ids),), generator=gen)
        section = np.searchsorted(self.offsets, ids, side="right") - 1
        local = torch.from_numpy(ids - self.offsets[section])
        images = torch.empty((len(ids), *first.activations.shape[2:]), dtype=torch.float32)
        means = torch.empty((len(ids), *first.means.shape[2:]), dtype=first.means.dtype)
        for s in np.unique(section):
            at = torch.from_numpy(np.flatnonzero(section == s))
            acts, pooled = self.fronts[s]
            images[at] = acts[views[at], local[at]].float()
            means[at] = pooled[views[at], local[at]]
        return images, means

    def _images(self, ids: np.ndarray, aug_seed: int) -> torch.Tensor:
        from mclstexp import _native

        in_worker = torch.utils.data.get_worker_info() is not None
        threads = 1 if in_worker else self.n_threads
        read_threads = threads if threads is not None else _native.default_num_threads()
        b = len(ids)
        h, w, _ = first = self.sections[0].patch_shape
        # workers send augmented uint8 (4x less shared memory to fault in and map; measured
        # 2.7x less CPU per patch) and the main process converts it (:meth:`model_images`)
        unit = self.augment and self.image_format == "unit" and not in_worker
        shape = (b, 3, h, w) if unit else (b, h, w, 3)
        images = self._buffer(shape, torch.float32 if unit else torch.uint8, in_worker)
        dst = images.numpy()
        params = None
        if self.augment:
            params = draw_augment_params(b, torch.Generator().manual_seed(aug_seed))
        sec = np.searchsorted(self.offsets, ids, side="right") - 1
        for k in np.unique(sec):
            section = self.sections[k]
            if section.patch_shape != first:
                raise ValueError(
                    f"section {section.name} has patches {section.patch_shape}, "
                    f"{self.sections[0].name} has {first}: use one patch size"
                )
            where = np.flatnonzero(sec == k)
            local = ids[where] - self.offsets[k]
            if local.size and (local.min() < 0 or local.max() >= section.n_obs):
                raise IndexError(f"spot index out of range for section {section.name}")
            if params is None:
                if where.size == b:  # the batch comes from this section only
                    section.read_patches(local, out=dst, n_threads=read_threads)
                else:
                    dst[where] = section.read_patches(local, n_threads=read_threads)
                continue
            patches = section.patches
            if isinstance(patches, np.ndarray) and patches.flags.c_contiguous:
                src, rows = patches, local  # gathered by the kernel
            else:
                src = section.read_patches(local, n_threads=read_threads)
                rows = np.arange(where.size)
            augment_native(
                src,
                params.take(where),
                rows=rows,
                out=dst,
                out_rows=where,
                normalize=UNIT if unit else None,
                n_threads=threads,
            )
        return images

    def model_images(self, images: torch.Tensor) -> torch.Tensor:
        """The loader's image batch in the configured format: an augmented uint8 batch from a
        worker becomes float32 ``(B, 3, H, W)`` in [0, 1] (native conversion, bit-identical to
        the fused kernel's own output), so the model sees the same bits with any number of
        workers."""
        if self.augment and self.image_format == "unit" and images.dtype == torch.uint8:
            from mclstexp import _native

            unit = _native.normalize_to_tensor_layout(
                np.ascontiguousarray(images.numpy()), *UNIT, n_threads=self.n_threads
            )
            return torch.from_numpy(unit)
        return images

    def _buffer(self, shape: tuple[int, ...], dtype: torch.dtype, in_worker: bool) -> torch.Tensor:
        if in_worker:
            # shared memory: the batch travels to the main process without a copy
            return torch.empty(shape, dtype=dtype).share_memory_()
        if self.reuse_buffers <= 0:
            return torch.empty(shape, dtype=dtype)
        numel = math.prod(shape)
        if len(self._ring) < self.reuse_buffers:
            self._ring.append(torch.empty(0, dtype=dtype))
        slot = self._ring_next % len(self._ring)
        self._ring_next += 1
        buf = self._ring[slot]
        if buf.dtype != dtype or buf.numel() < numel:
            buf = self._ring[slot] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(shape)


class EpochKeys:
    """The DataLoader's sampler: this epoch's batch keys (reassigned every epoch, so persistent
    workers survive across epochs).

    Examples
    --------
    >>> keys = EpochKeys(); keys.keys = [(1, []), (2, [])]
    >>> len(keys), [k for k, _ in keys]
    (2, [1, 2])
    """

    def __init__(self) -> None:
        self.keys: list[tuple[int, list[np.ndarray]]] = []

    def __iter__(self) -> Any:
        return iter(list(self.keys))

    def __len__(self) -> int:
        return len(self.keys)


def augment_seed(seed: int, epoch: int, rank: int, step: int) -> int:
    """The augmentation seed of one step (independent of how batches are spread over workers).

    Examples
    --------
    >>> augment_seed(0, 1, 0, 2) == augment_seed(0, 1, 0, 2) != augment_seed(0, 1, 0, 3)
    True
    """
    return int(np.random.SeedSequence([seed, epoch, rank, step]).generate_state(1, np.uint64)[0])


def epoch_keys(plan: BatchPlan, seed: int, epoch: int) -> list[tuple[int, list[np.ndarray]]]:
    """This rank's keys of ``epoch``: ``(augmentation seed, batch)``, batch i of the loader is
    key i (order kept, also with workers).

    Examples
    --------
    >>> plan = BatchPlan([np.zeros((10, 2), np.int64)], mode="batch", batch_size=4)
    >>> [len(batch[0]) for _, batch in epoch_keys(plan, seed=0, epoch=0)]
    [4, 4, 2]
    """
    batches = plan.rank_batches(epoch)
    return [(augment_seed(seed, epoch, plan.rank, i), b) for i, b in enumerate(batches)]
