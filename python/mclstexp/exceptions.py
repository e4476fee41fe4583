"""Exception classes of mclstexp.

Bad arguments raise the built-in ``ValueError``/``TypeError``; file problems raise ``OSError`` /
``FileNotFoundError`` carrying the path. Domain failures raise subclasses of :class:`MclstexpError`.
The Rust core maps its errors onto exactly these classes (see ``rust/mclstexp-py/src/errors.rs``).
"""

from __future__ import annotations


class MclstexpError(Exception):
    """Base class of every domain error raised by mclstexp.

    Examples
    --------
    >>> try:
    ...     raise SlideFormatError("slide.svs: not a TIFF file")
    ... except MclstexpError as err:
    ...     print(err)
    slide.svs: not a TIFF file
    """


class SlideFormatError(MclstexpError):
    """A file is not a readable slide, or it is corrupt (truncated, bad offsets, absurd sizes)."""


class NoTissueError(MclstexpError):
    """No tissue was found where some was required (e.g. grid tiling of a blank slide)."""


class CacheMismatchError(MclstexpError):
    """A patch cache exists but was made with other parameters; it is never silently reused."""


class ReferenceMismatchError(MclstexpError):
    """A retrieval reference does not belong to the model it is used with (other weights, genes
    or embedding size): its predictions would be nonsense under the reference's gene names."""


class WeightsError(MclstexpError, ValueError):
    """The weights of an image encoder cannot be had: an unknown encoder name, a gated model
    without access or token, offline mode with nothing cached, or weights whose tensors do not
    match the architecture.

    The message names what a person can do: the hub id and its model page (where access is
    requested), ``HF_TOKEN`` / ``hf auth login``, the cache folder, and the ``weights=PATH``
    alternative. It is also a ``ValueError``: every case starts from a ``backbone``/``weights``
    argument that cannot be satisfied.
    """


class DatasetAccessError(MclstexpError, OSError):
    """A public dataset on the Hugging Face hub cannot be had: gated without access or token,
    offline with nothing cached, an unknown repository or revision, or no network.

    The message names what a person can do: the dataset page (where access is requested),
    ``HF_TOKEN`` / ``hf auth login``, the cache folder and ``HF_HUB_OFFLINE``, and the
    alternative of passing a local copy. It is also an ``OSError``: the data could not be read.
    """


class DataWarning(UserWarning):
    """Input data needed a documented adjustment (zero-count spots set to zero, rows dropped, ...).

    The message says what was adjusted, how many items, and in which file or section.
    """
