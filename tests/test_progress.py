"""Progress bars redraw rarely when their output is a log file, not a terminal."""

from __future__ import annotations

import io
import time

from mclstexp._progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _interval(stream: io.StringIO, **kwargs: float) -> float:
    bar = progress_bar(total=1, file=stream, **kwargs)
    bar.close()
    return bar.mininterval


def _redraws(stream: io.StringIO) -> int:
    bar = progress_bar(total=20, desc="work", file=stream, miniters=1)
    for _ in range(20):
        time.sleep(0.02)  # 0.4 s: a terminal bar redraws about 4 times
        bar.update(1)
    bar.close()
    return stream.getvalue().count("\r")


def test_a_log_file_gets_the_first_and_last_state_only() -> None:
    log = io.StringIO()
    assert _interval(io.StringIO()) == LOG_INTERVAL_S
    redraws = _redraws(log)
    assert redraws <= 3, log.getvalue()
    assert "20/20" in log.getvalue()


def test_a_terminal_keeps_tqdm_defaults_and_an_explicit_interval_wins() -> None:
    assert _redraws(_Terminal()) > 3
    assert _interval(_Terminal()) == 0.1
    assert _interval(io.StringIO(), mininterval=0.5) == 0.5
