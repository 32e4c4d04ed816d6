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


def test_status_and_report_say_what_they_are_doing(tmp_path, monkeypatch):
    """Commands with no count to show (planning, reading a store, writing a report) show a spinner
    naming the work on stderr, and nothing under --quiet."""
    from importlib import resources

    from typer.testing import CliRunner

    from robquant import cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=out, width=120, force_terminal=True, color_system=None))
    study = resources.files("robquant") / "configs" / "demo.yaml"
    result = CliRunner().invoke(cli.app, ["status", str(study), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    assert f"planning {study} and reading its store" in out.getvalue()
    out.truncate(0)
    out.seek(0)
    result = CliRunner().invoke(cli.app, ["--quiet", "status", str(study), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0 and out.getvalue() == ""
