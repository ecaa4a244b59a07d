"""A study's MLflow run tree, and nothing else: create and find its runs, decide which arms are missing,
close what a dead worker left running, and collect the finished arms into one table.

::

    study gru64 x3              (tag kd_imdb.study_key; tables, CSV and plots as artifacts)
      gru-64                    (a configuration: tag kd_imdb.config; each arm's mean and KD minus scratch)
        gru-64 s0               (a seed pair: tag kd_imdb.seed)
          gru-64 s0 scratch, gru-64 s0 kd, ...   (the arms: tags kd_imdb.arm, kd_imdb.study)

Every (configuration, seed, arm) ends with exactly one FINISHED run; failed or killed attempts stay for
the record (KILLED) and are never counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient

from kd_imdb import tracking

FINISHED, KILLED = "FINISHED", "KILLED"


@dataclass(frozen=True)
class Cell:
    """One seed pair of one student configuration: the unit of work of a study."""

    configuration: tuple[str, int]  # (arch, hidden)
    seed: int
    pair_id: str
    config_id: str = ""
    missing: tuple[str, ...] = ()  # arms without a FINISHED run when the study was planned

    def to_json(self) -> dict:
        """What a worker on another machine needs (Optuna stores the plan as JSON)."""
        return {"configuration": list(self.configuration), "seed": self.seed, "pair_id": self.pair_id}

    @classmethod
    def from_json(cls, cell: dict) -> Cell:
        return cls(tuple(cell["configuration"]), int(cell["seed"]), cell["pair_id"])


def config_name(configuration: tuple[str, int]) -> str:
    return f"{configuration[0]}-{configuration[1]}"


def child_run(client: MlflowClient, experiment_id: str, parent_id: str, tag: str, value: str, name: str,
              extra_tags: dict | None = None) -> str:
    """The child run of ``parent_id`` tagged ``tag=value``, created if absent (newest wins)."""
    found = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and tags.`{tag}` = '{value}'",
                               order_by=["attributes.start_time DESC"])
    if found:
        return found[0].info.run_id
    tags = {"mlflow.parentRunId": parent_id, tag: value, "mlflow.runName": name, **(extra_tags or {})}
    return client.create_run(experiment_id, tags=tags, run_name=name).info.run_id


def find_study(client: MlflowClient, experiment_id: str, keys: list[str]) -> str | None:
    """The first study run tagged with any of ``keys`` (a study's key, then its older keys), or None."""
    runs = [run for key in keys for run in client.search_runs([experiment_id], f"tags.`kd_imdb.study_key` = '{key}'")]
    return min(runs, key=lambda run: run.info.start_time).info.run_id if runs else None


def arm_runs(client: MlflowClient, experiment_id: str, pair_id: str) -> dict:
    """The arm runs under a pair, one per arm: its FINISHED run if any, else its newest attempt."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{pair_id}'",
                              order_by=["attributes.start_time DESC"])
    out = {}
    for run in runs:
        arm = run.data.tags.get("kd_imdb.arm")
        if arm not in out or (run.info.status == FINISHED and out[arm].info.status != FINISHED):
            out[arm] = run
    return out


def missing_arms(client: MlflowClient, experiment_id: str, pair_id: str, arms: tuple[str, ...]) -> list[str]:
    """The arms of ``arms`` that have no FINISHED run under the pair, in the order of ``arms``."""
    done = arm_runs(client, experiment_id, pair_id)
    return [a for a in arms if a not in done or done[a].info.status != FINISHED]


def close_stale_runs(client: MlflowClient, experiment_id: str, pair_id: str) -> None:
    """Runs left RUNNING under a pair by a killed worker are marked KILLED (kept for the record, never
    counted). Call it only where no live worker can hold the pair."""
    for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{pair_id}'"):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=KILLED)


def plan(client: MlflowClient, experiment_id: str, study_id: str, configurations: list[tuple[str, int]],
         seeds: range, arms: tuple[str, ...], close_stale: bool = True) -> list[Cell]:
    """Create (or find) every configuration and pair run of the study; one cell per pair, with the arms
    it misses. ``close_stale``: no worker of another machine can hold a pair, so runs left RUNNING are
    a dead worker's."""
    cells = []
    for configuration in configurations:
        name = config_name(configuration)
        config_id = child_run(client, experiment_id, study_id, "kd_imdb.config", name, name,
                              {"kd_imdb.stage": "study_config", "kd_imdb.study": study_id,
                               tracking.DESCRIPTION_TAG: f"{name}: {', '.join(arms)} over {len(seeds)} seed pairs; "
                                                         "each arm's mean test accuracy and its difference from "
                                                         "scratch as metrics"})
        for seed in seeds:
            pair_id = child_run(client, experiment_id, config_id, "kd_imdb.seed", str(seed), f"{name} s{seed}",
                                {"kd_imdb.stage": "student_pair", "kd_imdb.config": name, "kd_imdb.study": study_id,
                                 tracking.DESCRIPTION_TAG: f"{name} seed {seed}: the arms {', '.join(arms)} from "
                                                           "identical initial weights and batch order"})
            if close_stale:
                close_stale_runs(client, experiment_id, pair_id)
            missing = tuple(missing_arms(client, experiment_id, pair_id, arms))
            cells.append(Cell(configuration, seed, pair_id, config_id, missing))
    return cells


def close_stopped(client: MlflowClient, cells: list[Cell], pairs: bool) -> None:
    """A study stopped by Ctrl-C or SIGTERM: its configuration runs, and with ``pairs`` its pair runs
    still open (no worker holds them: local workers are stopped first), end KILLED with the study run;
    a rerun reopens and finishes them. Pairs of a shared grid stay open for the remote workers."""
    ids = [*dict.fromkeys(cell.config_id for cell in cells), *([cell.pair_id for cell in cells] if pairs else [])]
    for run_id in ids:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status=KILLED)


def finish_configurations(client: MlflowClient, cells: list[Cell]) -> None:
    """Configuration runs end when all their pairs have."""
    for config_id in dict.fromkeys(cell.config_id for cell in cells):
        client.set_terminated(config_id, status=FINISHED)


def log_configuration_metrics(client: MlflowClient, cells: list[Cell], metrics: dict[tuple[str, int], dict]) -> None:
    """On each configuration run, its results (``analysis.configuration_metrics``), so the runs table
    and the compare view show them."""
    for cell in {cell.config_id: cell for cell in cells}.values():
        values = metrics.get(cell.configuration, {})
        if values:
            client.log_batch(cell.config_id, [Metric(k, v, int(time.time() * 1000), 0) for k, v in values.items()])


def arm_row(run: Run, configuration: str, seed: int) -> dict:
    """One row of a study's runs.csv: configuration, arch, hidden, seed, arm, run_id, then the arm run's
    metrics. The one place these columns are named (``collect``, ``scripts/runs_csv.py``)."""
    return {"configuration": configuration, "arch": run.data.params["arch"], "hidden": int(run.data.params["hidden"]),
            "seed": seed, "arm": run.data.tags["kd_imdb.arm"], "run_id": run.info.run_id, **run.data.metrics}


def collect(client: MlflowClient, experiment_id: str, study_id: str) -> pd.DataFrame:
    """One row per finished arm run of the study: configuration, arch, hidden, seed, arm, run_id, and the
    run's metrics; sorted by arch, hidden, seed, arm (empty if none finished)."""
    rows = []
    configs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{study_id}'")
    for config in configs:
        for pair in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{config.info.run_id}'"):
            for run in arm_runs(client, experiment_id, pair.info.run_id).values():
                if run.info.status != FINISHED:
                    continue
                rows.append(arm_row(run, config.data.tags["kd_imdb.config"], int(pair.data.tags["kd_imdb.seed"])))
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["arch", "hidden", "seed", "arm"]).reset_index(drop=True)
