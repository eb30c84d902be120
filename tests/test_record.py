"""The committed record regenerates: ``python -m bench report`` on committed run folders writes the
committed REPORT.md, CSVs and plots byte for byte — on a small fixture (tests/fixtures/record: real smoke
runs of the trainer, a failed ablation among them) and on the project's record in results/.

To refresh the fixture after a deliberate change of the report: ``python -m bench report --results
tests/fixtures/record``; the record: ``python -m bench report --results results``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.report.generate import report

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "record"
RECORD = ROOT / "results"
GENERATED = ("REPORT.md", "summary.csv", "final_metrics.csv", "curves.csv", "runs.csv", "provenance.csv")
GENERATED += ("ablations.csv",)


def _generated(folder: Path) -> dict[str, bytes]:
    """Every file the report writes in ``folder`` (its tables, REPORT.md and plots)."""
    names = [name for name in GENERATED if (folder / name).exists()]
    names += [p.relative_to(folder).as_posix() for p in sorted((folder / "plots").glob("*.png"))]
    return {name: (folder / name).read_bytes() for name in names}


def _regenerate(source: Path, tmp_path: Path) -> dict[str, bytes]:
    shutil.copytree(source / "runs", tmp_path / "runs")
    report(tmp_path)
    return _generated(tmp_path)


@pytest.mark.parametrize("source", [FIXTURE, RECORD], ids=["fixture", "results"])
def test_the_committed_report_regenerates_byte_for_byte(source, tmp_path):
    assert (source / "runs").is_dir(), f"{source} holds no run folders: the committed report has no record"
    committed = _generated(source)
    assert "REPORT.md" in committed
    regenerated = _regenerate(source, tmp_path)
    assert sorted(regenerated) == sorted(committed)
    differ = [name for name in committed if regenerated[name] != committed[name]]
    assert not differ, f"regenerated files differ from the committed ones: {differ}"
    # paths inside the report are relative: nothing names the folder it was generated in
    assert str(tmp_path) not in regenerated["REPORT.md"].decode()
