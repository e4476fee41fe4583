"""Stain normalisation of H&E patches (Macenko, Reinhard) with a fast, robust Rust core.

H&E colour varies between labs, scanners and days. :class:`StainNormalizer` fits the colours of a
target image once, then maps batches of patches to them in parallel (GIL released). Patches with too
little tissue (background, black, white, a single colour) are returned unchanged and counted, with
one warning per call saying how many; nothing raises from deep inside and nothing returns NaN.

The fitted target is plain numbers, saved as JSON (:meth:`StainNormalizer.save`), never pickled.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mclstexp import _native
from mclstexp._validate import check_n_threads
from mclstexp.pp.layout import _as_patches

__all__ = ["StainNormalizationWarning", "StainNormalizer"]

_FORMAT = "mclstexp.StainNormalizer"
_FORMAT_VERSION = 1
_METHODS = ("macenko", "reinhard")
_DEFAULTS: dict[str, dict[str, float]] = {
    "macenko": {"Io": 240.0, "alpha": 1.0, "beta": 0.15, "min_tissue": 0.01},
    "reinhard": {"Io": 240.0, "beta": 0.15, "min_tissue": 0.01},
}


#: The optical density of the darkest pixel (0) under the brightest light (255): no threshold and
#: no stain concentration above it can come from an 8-bit image.
_MAX_OD = math.log(256.0)
#: Allowed ranges ``(low, high, low included, high included)``, checked when a normaliser is
#: made, fitted or loaded, so a tampered file cannot turn every patch black or white.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "Io": (1.0, 255.0, False, True),  # background brightness, a pixel value
    "beta": (0.0, _MAX_OD, True, True),  # an optical density
    "min_tissue": (0.0, 1.0, True, True),  # a fraction
    "alpha": (0.0, 50.0, True, False),  # a percentile below the median
    # 99th-percentile H and E concentrations: real H&E targets give 0.4-3.1
    "max_conc": (0.05, 30.0, True, True),
    "lab_L": (0.0, 100.0, True, True),
    "lab_ab": (-128.0, 128.0, True, True),
    "lab_std_L": (1e-3, 50.0, True, True),  # 50: the largest std of values in [0, 100]
    "lab_std_ab": (1e-3, 128.0, True, True),
}


def _check_range(name: str, values: Any, key: str | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` when a value is outside ``_RANGES[key or name]``."""
    lo, hi, lo_in, hi_in = _RANGES[key or name]
    for v in np.atleast_1d(np.asarray(values, dtype=np.float64)):
        inside = (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not inside:
            bounds = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
            raise ValueError(f"{name}: {v:g} is outside the plausible range {bounds}")


class StainNormalizationWarning(UserWarning):
    """Some patches could not be normalised (too little tissue or one colour) and were returned
    unchanged."""


def _read_image(path: str | os.PathLike[str]) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


class StainNormalizer:
    """Normalise the stain colours of H&E patches to a target image.

    Parameters
    ----------
    method
        ``"macenko"`` (stain vectors and concentrations in optical density; Macenko et al. 2009) or
        ``"reinhard"`` (LAB mean/std matching; Reinhard et al. 2001).
    Io
        Transmitted light intensity (background brightness), 240 by default.
    alpha
        Macenko only: percentile (in %) of the robust extreme angles, 1 by default.
    beta
        Optical density threshold of tissue (every channel's OD ``>= beta``), 0.15 by default.
    min_tissue
        Smallest tissue fraction of a patch that is normalised, 0.01 by default; patches below are
        returned unchanged and counted.
    n_threads
        Threads of the native pool (default: ``MCLSTEXP_NUM_THREADS`` or all CPUs).

    Attributes
    ----------
    stain_matrix_
        Macenko: the target's ``(3, 2)`` unit OD vectors, columns hematoxylin and eosin.
    max_conc_
        Macenko: the target's 99th-percentile H and E concentrations.
    lab_mean_, lab_std_
        Reinhard: the target's LAB mean and standard deviation (L on 0..100).
    n_skipped_last
        How many patches the last :meth:`transform`/:meth:`concentrations` call returned unchanged.
    skipped_last
        Boolean mask of those patches (``None`` before the first call).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> od = rng.uniform(0, 1.5, (64, 64, 1)) * [0.65, 0.70, 0.29] + rng.uniform(
    ...     0, 1, (64, 64, 1)
    ... ) * [0.07, 0.99, 0.11]
    >>> image = (240 * np.exp(-od) - 1).clip(0, 255).astype(np.uint8)
    >>> norm = StainNormalizer("macenko").fit(image)
    >>> norm.transform(image).shape
    (64, 64, 3)
    >>> norm.stain_matrix_.shape
    (3, 2)
    """

    def __init__(
        self,
        method: Literal["macenko", "reinhard"] = "macenko",
        *,
        Io: float = 240.0,
        alpha: float | None = None,
        beta: float = 0.15,
        min_tissue: float = 0.01,
        n_threads: int | None = None,
    ) -> None:
        if method not in _METHODS:
            raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
        if method == "reinhard" and alpha is not None:
            raise ValueError("alpha: only used by method='macenko' (Reinhard has no angles)")
        params: dict[str, float] = {"Io": Io, "beta": beta, "min_tissue": min_tissue}
        if method == "macenko":
            params["alpha"] = 1.0 if alpha is None else alpha
        for name, value in params.items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
            if not math.isfinite(float(value)):
                raise ValueError(f"{name}: must be finite, got {value}")
            _check_range(name, value)
        self.method: str = method
        self.params: dict[str, float] = {k: float(v) for k, v in params.items()}
        self.n_threads = check_n_threads(n_threads)
        self.stain_matrix_: np.ndarray | None = None
        self.max_conc_: np.ndarray | None = None
        self.lab_mean_: np.ndarray | None = None
        self.lab_std_: np.ndarray | None = None
        self.n_skipped_last: int = 0
        self.skipped_last: np.ndarray | None = None

    # -- state --------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """Whether a target has been fitted or loaded."""
        if self.method == "macenko":
            return self.stain_matrix_ is not None
        return self.lab_mean_ is not None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        state = "fitted" if self.is_fitted else "not fitted"
        return f"StainNormalizer({self.method!r}, {params}) [{state}]"

    def _native_kwargs(self) -> dict[str, float]:
        kwargs = {
            "io": self.params["Io"],
            "beta": self.params["beta"],
            "min_tissue": self.params["min_tissue"],
        }
        if self.method == "macenko":
            kwargs["alpha"] = self.params["alpha"]
        return kwargs

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                "StainNormalizer is not fitted: call fit(target_image) or "
                "StainNormalizer.load(path)"
            )

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, image: np.ndarray | str | os.PathLike[str]) -> StainNormalizer:
        """Fit the target colours on one image or on a set of patches (pixels pooled).

        Parameters
        ----------
        image
            uint8 RGB array ``(H, W, 3)`` or ``(N, H, W, 3)``, or the path of an image file.

        Returns
        -------
        StainNormalizer
            ``self``.

        Raises
        ------
        ValueError
            Wrong dtype/shape, or a target that cannot be fitted (background only, a single colour,
            a single stain); the message says why (and names the file when given a path).

        Examples
        --------
        >>> import numpy as np
        >>> flat = np.full((8, 8, 3), 250, dtype=np.uint8)
        >>> try:
        ...     StainNormalizer("macenko").fit(flat)
        ... except ValueError as err:
        ...     print("too little tissue" in str(err))
        True
        """
        if isinstance(image, str | os.PathLike):
            try:
                return self.fit(_read_image(image))
            except ValueError as err:  # name the file: "too little tissue" alone does not say which
                raise ValueError(f"{image}: {err}") from err
        array, _ = _as_patches(image, "image")
        pixels = array.reshape(-1, 3)
        if pixels.shape[0] == 0:
            raise ValueError("image: has no pixels")
        if self.method == "macenko":
            matrix, max_conc = _native.stain_macenko_fit(pixels, **self._native_kwargs())
            self.stain_matrix_ = np.asarray(matrix, dtype=np.float64)
            self.max_conc_ = np.asarray(max_conc, dtype=np.float64)
        else:
            mean, std = _native.stain_reinhard_fit(pixels, **self._native_kwargs())
            self.lab_mean_ = np.asarray(mean, dtype=np.float64)
            self.lab_std_ = np.asarray(std, dtype=np.float64)
        try:
            self._check_target()
        except ValueError as err:
            self.stain_matrix_ = self.max_conc_ = self.lab_mean_ = self.lab_std_ = None
            raise ValueError(
                f"image: not a usable H&E target, its fit is implausible ({err})"
            ) from err
        return self

    def _check_target(self) -> None:
        """Raise ``ValueError`` naming the field when the fitted target is out of range: stain
        vectors of unit length with no negative absorbance, concentrations and LAB statistics
        within :data:`_RANGES` (what an 8-bit H&E image can give)."""
        if self.stain_matrix_ is not None and self.max_conc_ is not None:
            norms = np.linalg.norm(self.stain_matrix_, axis=0)
            if np.any(np.abs(norms - 1.0) > 1e-3) or np.any(self.stain_matrix_ < -0.05):
                raise ValueError(
                    "stain_matrix: its columns must be unit optical-density vectors with no "
                    f"negative component, got {self.stain_matrix_.tolist()}"
                )
            _check_range("max_conc", self.max_conc_)
        if self.lab_mean_ is not None and self.lab_std_ is not None:
            _check_range("lab_mean", self.lab_mean_[0], "lab_L")
            _check_range("lab_mean", self.lab_mean_[1:], "lab_ab")
            _check_range("lab_std", self.lab_std_[0], "lab_std_L")
            _check_range("lab_std", self.lab_std_[1:], "lab_std_ab")

    # -- transforming -------------------------------------------------------------------------
    def _record_skipped(self, skipped: np.ndarray) -> None:
        self.skipped_last = skipped
        self.n_skipped_last = int(skipped.sum())
        if self.n_skipped_last:
            warnings.warn(
                f"{self.n_skipped_last} of {skipped.size} patches had too little tissue or a "
                f"single colour and were returned unchanged "
                f"(min_tissue={self.params['min_tissue']:g}, beta={self.params['beta']:g})",
                StainNormalizationWarning,
                stacklevel=3,
            )

    def _macenko(self, array: np.ndarray, concentrations: bool) -> tuple[np.ndarray, Any]:
        assert self.stain_matrix_ is not None and self.max_conc_ is not None
        out, skipped, conc = _native.stain_macenko_transform(
            array,
            self.stain_matrix_.tolist(),
            self.max_conc_.tolist(),
            concentrations=concentrations,
            n_threads=self.n_threads,
            **self._native_kwargs(),
        )
        self._record_skipped(skipped)
        return out, conc

    def transform(self, patches: np.ndarray) -> np.ndarray:
        """Normalise patches to the fitted target.

        Parameters
        ----------
        patches
            uint8 RGB array ``(H, W, 3)`` or ``(N, H, W, 3)``.

        Returns
        -------
        numpy.ndarray
            uint8 array of the same shape. Patches with too little tissue are returned unchanged;
            their count is in :attr:`n_skipped_last` and a :class:`StainNormalizationWarning` says
            how many.

        Examples
        --------
        >>> import numpy as np
        >>> norm = StainNormalizer("reinhard")
        >>> norm.lab_mean_, norm.lab_std_ = np.array([60.0, 20, -10]), np.array([15.0, 8, 6])
        >>> white = np.full((2, 8, 8, 3), 250, dtype=np.uint8)
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     out = norm.transform(white)
        >>> bool((out == white).all()), norm.n_skipped_last
        (True, 2)
        """
        self._require_fitted()
        array, single = _as_patches(patches)
        if self.method == "macenko":
            out, _ = self._macenko(array, concentrations=False)
        else:
            assert self.lab_mean_ is not None and self.lab_std_ is not None
            out, skipped = _native.stain_reinhard_transform(
                array,
                self.lab_mean_.tolist(),
                self.lab_std_.tolist(),
                n_threads=self.n_threads,
                **self._native_kwargs(),
            )
            self._record_skipped(skipped)
        return out[0] if single else out

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Same as :meth:`transform`, so the normaliser can be used as a training transform."""
        return self.transform(patches)

    def fit_transform(self, image: np.ndarray) -> np.ndarray:
        """Fit on ``image`` and return it normalised (see :meth:`fit` and :meth:`transform`).

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> image = rng.integers(40, 220, (32, 32, 3), dtype=np.uint8)
        >>> StainNormalizer("reinhard").fit_transform(image).dtype
        dtype('uint8')
        """
        return self.fit(image).transform(image)

    def concentrations(self, patches: np.ndarray) -> np.ndarray:
        """Hematoxylin and eosin concentrations of patches (Macenko only).

        The concentrations each patch is re-composed from by :meth:`transform` (the patch's own
        stain vectors, scaled to the target's 99th percentiles). For a patch with too little tissue,
        its concentrations under the target's stain vectors, unscaled.

        Parameters
        ----------
        patches
            uint8 RGB array ``(H, W, 3)`` or ``(N, H, W, 3)``.

        Returns
        -------
        numpy.ndarray
            float32 array ``(..., H, W, 2)``: channel 0 hematoxylin, channel 1 eosin.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> od = rng.uniform(0, 1.5, (32, 32, 1)) * [0.65, 0.70, 0.29] + rng.uniform(
        ...     0, 1, (32, 32, 1)
        ... ) * [0.07, 0.99, 0.11]
        >>> image = (240 * np.exp(-od) - 1).clip(0, 255).astype(np.uint8)
        >>> StainNormalizer().fit(image).concentrations(image).shape
        (32, 32, 2)
        """
        if self.method != "macenko":
            raise ValueError(
                "concentrations: need method='macenko' (Reinhard has no stain vectors)"
            )
        self._require_fitted()
        array, single = _as_patches(patches)
        _, conc = self._macenko(array, concentrations=True)
        return conc[0] if single else conc

    @classmethod
    def from_spec(
        cls, spec: str | os.PathLike[str], *, n_threads: int | None = None
    ) -> StainNormalizer:
        """Build a fitted normaliser from a command-line value (e.g. ``--stain-normalize``).

        ``spec`` is a JSON file written by :meth:`save`, or ``[METHOD:]IMAGE`` with ``METHOD``
        one of ``macenko`` (default) and ``reinhard`` and ``IMAGE`` a target image file to fit on.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "stain.json")
        >>> StainNormalizer("reinhard").save(path)
        >>> StainNormalizer.from_spec(path).method
        'reinhard'
        """
        text = os.fspath(spec)
        if text.lower().endswith(".json"):
            return cls.load(text, n_threads=n_threads)
        method, sep, image = text.partition(":")
        if not sep or method not in _METHODS:
            method, image = "macenko", text
        if not Path(image).is_file():
            raise FileNotFoundError(
                f"stain target {image!r} not found (expected a target image, "
                "'reinhard:IMAGE', or a JSON file from StainNormalizer.save)"
            )
        return cls(method, n_threads=n_threads).fit(image)  # type: ignore[arg-type]

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The method, parameters and fitted target as plain JSON-able values.

        Examples
        --------
        >>> StainNormalizer("reinhard").to_dict()["method"]
        'reinhard'
        """
        target: dict[str, Any] | None = None
        if self.is_fitted:
            if self.method == "macenko":
                assert self.stain_matrix_ is not None and self.max_conc_ is not None
                target = {
                    "stain_matrix": self.stain_matrix_.tolist(),
                    "max_conc": self.max_conc_.tolist(),
                }
            else:
                assert self.lab_mean_ is not None and self.lab_std_ is not None
                target = {"lab_mean": self.lab_mean_.tolist(), "lab_std": self.lab_std_.tolist()}
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "method": self.method,
            "params": dict(self.params),
            "target": target,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, n_threads: int | None = None) -> StainNormalizer:
        """Rebuild a normaliser from :meth:`to_dict` output (validated, never executed).

        Examples
        --------
        >>> norm = StainNormalizer.from_dict(StainNormalizer("macenko", alpha=2).to_dict())
        >>> norm.params["alpha"]
        2.0
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"data: not a {_FORMAT} description (missing 'format': {_FORMAT!r})")
        if data.get("version") != _FORMAT_VERSION:
            raise ValueError(
                f"data: unsupported version {data.get('version')!r} (this mclstexp reads "
                f"{_FORMAT_VERSION})"
            )
        method = data.get("method")
        if method not in _METHODS:
            raise ValueError(f"data: method must be one of {_METHODS}, got {method!r}")
        params = data.get("params")
        if not isinstance(params, dict) or set(params) != set(_DEFAULTS[method]):
            raise ValueError(
                f"data: params must have exactly the keys {sorted(_DEFAULTS[method])}, "
                f"got {params!r}"
            )
        norm = cls(method, n_threads=n_threads, **params)
        target = data.get("target")
        if target is None:
            return norm

        def vector(key: str, shape: tuple[int, ...]) -> np.ndarray:
            try:
                value = np.asarray(target[key], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"data: target[{key!r}] missing or not numeric") from err
            if value.shape != shape or not np.all(np.isfinite(value)):
                raise ValueError(f"data: target[{key!r}] must be finite with shape {shape}")
            return value

        if not isinstance(target, dict):
            raise ValueError("data: target must be a mapping or null")
        if method == "macenko":
            norm.stain_matrix_ = vector("stain_matrix", (3, 2))
            norm.max_conc_ = vector("max_conc", (2,))
        else:
            norm.lab_mean_ = vector("lab_mean", (3,))
            norm.lab_std_ = vector("lab_std", (3,))
        try:
            norm._check_target()
        except ValueError as err:
            raise ValueError(f"data: target {err}") from None
        return norm

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the method, parameters and fitted target to a JSON file.

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "stain.json")
        >>> StainNormalizer("reinhard").save(path)
        >>> StainNormalizer.load(path).method
        'reinhard'
        """
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, n_threads: int | None = None) -> StainNormalizer:
        """Read a normaliser written by :meth:`save` (JSON; nothing is executed).

        Examples
        --------
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "stain.json")
        >>> StainNormalizer("macenko").save(path)
        >>> StainNormalizer.load(path).is_fitted
        False
        """
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a JSON stain normaliser file ({err})") from err
        try:
            return cls.from_dict(data, n_threads=n_threads)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err
