"""A runs.csv for arm runs trained one by one (``kd-imdb student``), laid out as a study's, so that
``kd-imdb register``, ``kd-imdb compare`` and ``scripts/search_table.py`` read them like a study's runs.

    python scripts/runs_csv.py --out results/student_search/<name>/runs.csv <run id> <run id> ...

Each row is read back from the tracking server (the run's tags, params and final metrics); nothing is
typed by hand. A run that is not a finished student run is one error line.

Runs that pair with an earlier study's scratch arm (trained on a machine that computes the same floats,
see RESULTS §24 round 14) take that arm's rows from its committed runs.csv with ``--scratch-from``, so
that ``scripts/teacher_strength.py`` finds the scratch arm beside them as in a study's own file.
``--append`` keeps the rows already in ``--out``: an arm whose seeds are trained over several sessions
(each with its own tracking store) grows one runs.csv.
"""
from pathlib import Path

import click
import pandas as pd
from mlflow.tracking import MlflowClient

from kd_imdb import ledger
from kd_imdb.analysis import PAIR_KEY


def row(client: MlflowClient, run_id: str) -> dict:
    """A study's runs.csv row (``ledger.arm_row``) for one finished student run, read from its own tags."""
    run = client.get_run(run_id)
    tags = run.data.tags
    if tags.get("kd_imdb.stage") != "student" or run.info.status != "FINISHED":
        raise click.UsageError(f"run {run_id} is not a finished student run "
                               f"(stage {tags.get('kd_imdb.stage')!r}, status {run.info.status})")
    return ledger.arm_row(run, tags["kd_imdb.config"], int(tags["kd_imdb.seed"]))


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--out", required=True, help="The runs.csv to write.")
@click.option("--scratch-from", "scratch_from", default=None,
              help="A committed runs.csv whose scratch rows for the same students and seeds are copied in.")
@click.option("--append", is_flag=True, help="Keep the rows already in --out (a run id is written once).")
def main(run_ids: tuple[str, ...], out: str, scratch_from: str | None, append: bool) -> None:
    client = MlflowClient()
    runs = pd.DataFrame([row(client, r) for r in run_ids])
    if scratch_from:
        earlier = pd.read_csv(scratch_from)
        pairs = runs[PAIR_KEY].drop_duplicates()  # the student and seed of each new run
        scratch = earlier[earlier["arm"] == "scratch"].merge(pairs)
        if len(scratch) < len(pairs):
            raise click.UsageError(f"{scratch_from} lacks a scratch run for some student and seed of these runs; "
                                   "train them with kd-imdb student --mode scratch")
        runs = pd.concat([runs, scratch[earlier.columns]], ignore_index=True)
    if append and Path(out).exists():
        runs = pd.concat([pd.read_csv(out), runs], ignore_index=True).drop_duplicates("run_id", keep="last")
    runs = runs.sort_values(["arch", "hidden", "seed", "arm"])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out, index=False)
    print(f"wrote {out}: {len(runs)} runs")


if __name__ == "__main__":
    main()
