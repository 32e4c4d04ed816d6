"""The progress display: on a narrow terminal the description gives way, the count and the ETA stay."""

import io

from rich.console import Console

from robquant.display import RichProgress


def test_progress_keeps_count_and_eta_visible_on_80_columns():
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with RichProgress(console) as progress:
        with progress.task("deployed model at 8/255: PGD-20 on the reference, Square (200 queries) on both",
                           10) as task:
            task.advance(3)
            progress._progress.refresh()
    text = out.getvalue()
    assert "3/10" in text and "eta" in text
