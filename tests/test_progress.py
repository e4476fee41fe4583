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


def test_the_training_bar_does_not_flood_a_log_file(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Regression: ``set_postfix`` redrew the epoch bar on every batch (862 lines for a 74 s
    run), so the log-file interval did not hold for the real training bar."""
    import pytest

    pytest.importorskip("torch")
    from _model_fixtures import make_sections
    from mclstexp.models import load_preset
    from mclstexp.train import train_model

    preset = load_preset("cpu", train__epochs=2, train__batch_size=4, model__sequence_length=2)
    m = preset.model
    m.backbone, m.pooling, m.feature_views = "test_resnet", "global", "single"
    train_model(make_sections(2, grid=6), preset, run_dir=tmp_path, device="cpu", progress=True)
    err = capsys.readouterr().err
    batches = 2 * 6 * 6 // 4  # 18 batches per epoch
    # at most the first, the last (and one timed) state per epoch; it was one per batch
    assert err.count("\repoch") <= 3 * 2, err
    assert f"{batches}/{batches}" in err and "loss=" in err
