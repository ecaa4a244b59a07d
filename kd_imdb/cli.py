"""The ``kd-imdb`` command line: one click subcommand per MLflow entry point.

Every command logs to ``MLFLOW_TRACKING_URI`` (default: the local SQLite store ``mlflow.db``).
Bad input ends with one line on stderr that names the problem and the fix, and exit status 2.
"""
from __future__ import annotations

import functools
import logging
import sys

import click

from kd_imdb import teacher as teacher_mod


def friendly_errors(fn):
    """Turn known bad-input errors into one line on stderr and exit status 2 (the run ends FAILED)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kd_imdb.data import DataError
        from kd_imdb.tracking import TrackingError

        try:
            return fn(*args, **kwargs)
        except (DataError, TrackingError, ValueError, FileNotFoundError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """Knowledge distillation of a transformer teacher into tiny GRU/CNN students on IMDB.

    Stages talk through MLflow artifacts: teacher -> soft-labels -> student.
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


DATA_HELP = ("'sample' (shipped), a folder with {train,test,unsupervised}.parquet, an aclImdb/ folder, "
             "a CSV/JSONL/parquet file with text,label[,split], or a hub id such as stanfordnlp/imdb.")


@main.command()
@click.option("--data", default="sample", show_default=True, help=DATA_HELP)
@click.option("--model", default="packaged", show_default=True,
              help="'packaged' (all-MiniLM-L6-v2, offline), 'tiny' (built from a config), a hub id or a local folder.")
@click.option("--max-len", "max_len", default=128, show_default=True, type=int, help="Tokens per review.")
@click.option("--truncation", default="head+tail", show_default=True, type=click.Choice(["head", "head+tail"]))
@click.option("--epochs", default=1.0, show_default=True, type=float)
@click.option("--lr", default=5e-5, show_default=True, type=float)
@click.option("--batch-size", "batch_size", default=32, show_default=True, type=int)
@click.option("--train-size", "train_size", default=0, show_default=True, type=int, help="Seeded subset of train; 0 = all.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--val-fraction", "val_fraction", default=0.1, show_default=True, type=float)
@click.option("--checkpoint-dir", "checkpoint_dir", default="checkpoints", show_default=True,
              help="Trainer checkpoints; rerunning the same config resumes from them.")
@friendly_errors
def teacher(**kwargs) -> None:
    """Fine-tune the teacher and log it with its validation and test metrics."""
    run_id = teacher_mod.run(teacher_mod.TeacherConfig(**kwargs))
    if run_id:
        click.echo(f"teacher run: {run_id}")


if __name__ == "__main__":
    main()
