"""Progress bars that stay readable in log files.

On a terminal a bar redraws in place several times a second. Redirected to a file, every redraw
becomes text, so a short run writes hundreds of kilobytes of carriage-return lines. When the
stream is not a terminal the bar here redraws at most every :data:`LOG_INTERVAL_S` seconds; its
first and final states are always written.
"""

from __future__ import annotations

import sys
from typing import Any

#: Seconds between redraws when the output is not a terminal.
LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on stderr that redraws rarely when stderr is not a terminal.

    Parameters
    ----------
    iterable
        Passed to ``tqdm``.
    **kwargs
        Passed to ``tqdm`` (``total``, ``desc``, ``unit``, ``disable``, ...). An explicit
        ``mininterval`` wins.

    Returns
    -------
    tqdm.tqdm
        The bar.

    Examples
    --------
    >>> bar = progress_bar(total=3, desc="demo", disable=True)
    >>> bar.update(3); bar.close()
    """
    from tqdm.auto import tqdm

    file = kwargs.get("file") or sys.stderr
    isatty = getattr(file, "isatty", None)
    if not (callable(isatty) and isatty()):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
    return tqdm(iterable, **kwargs)
