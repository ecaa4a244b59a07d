"""kd_imdb.analysis on the committed runs of a real study (no training, no server)."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import ROOT

RUNS = ROOT / "results" / "arms_gru256" / "runs.csv"


def test_a_study_without_a_kd_arm_gets_its_tables_and_plots(tmp_path):
    """Studies like ``--arms scratch,kd@linear`` have no ``kd`` arm; the accuracy plot once had no panel."""
    from kd_imdb.analysis import write_outputs

    runs = pd.read_csv(RUNS).query("arm != 'kd'")
    summary, table = write_outputs(runs, {}, tmp_path)
    assert list(summary["arm"]) == ["label_smoothing"]
    mean = runs.query("arm == 'label_smoothing'")["test_accuracy"].mean()
    assert summary["accuracy_label_smoothing"].iloc[0] == pytest.approx(mean)
    assert "label_smoothing vs scratch" in table
    for name in ("accuracy_vs_hidden.png", "kd_gain_vs_hidden.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 1000
