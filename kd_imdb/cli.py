"""The ``kd-imdb`` command line: one click subcommand per MLflow entry point.

Every command logs to ``MLFLOW_TRACKING_URI`` (default: the local SQLite store ``mlflow.db``).
Bad input ends with one line on stderr that names the problem and the fix, and exit status 2.

Each command imports its stage module when it runs: ``kd-imdb --help`` and a mistyped option answer at
once instead of after loading torch, MLflow and Optuna. The rest of the package imports at module top.
"""
from __future__ import annotations

import functools
import logging
import os
import sys

import click

from kd_imdb import teacher as teacher_mod
from kd_imdb.config import ARCHS, LR_SCHEDULES, SELECTION, ArmConfig, StudyConfig, SweepConfig


def friendly_errors(fn):
    """Turn known bad-input errors into one line on stderr and exit status 2, and a lost worker into one
    line and status 1 (either way the run ends FAILED); a SIGTERM stop is one line and status 143, its
    runs KILLED."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from kd_imdb.data import DataError
        from kd_imdb.executor import WorkerLost
        from kd_imdb.tracking import STOPPED_EXIT_STATUS, Stopped, TrackingError

        try:
            return fn(*args, **kwargs)
        except (DataError, TrackingError, ValueError, FileNotFoundError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except WorkerLost as exc:  # a fault, not bad input: status 1, and still one line
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Stopped:  # SIGTERM: not an error; what it was doing is closed KILLED and resumable
            click.echo("stopped by SIGTERM: its open runs are closed KILLED; rerun the same command to go on",
                       err=True)
            sys.exit(STOPPED_EXIT_STATUS)

    return wrapper


def none_means_empty(ctx, param, value: str) -> str:
    """'none' is an empty string option's 'not given': the MLproject's defaults say none rather than "",
    which ``mlflow run`` would log shell-quoted, as the param value ''."""
    return "" if value == "none" else value


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--experiment-name", "experiment_name", default=None, metavar="NAME",
              help="MLflow experiment of every run [default: $MLFLOW_EXPERIMENT_NAME, else kd_imdb].")
def main(verbose: bool, experiment_name: str | None) -> None:
    """Knowledge distillation of a transformer teacher into tiny GRU/CNN students on IMDB.

    Stages talk through MLflow artifacts: teacher -> soft-labels -> student. Every run logs to
    $MLFLOW_TRACKING_URI (default: sqlite:///mlflow.db), in the experiment kd_imdb unless named.
    """
    if experiment_name:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment_name  # what MLflow and the workers it starts read
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from kd_imdb.tracking import stop_on_sigterm

    stop_on_sigterm()  # kill, a scheduler's stop: the runs end KILLED on the way out, not left RUNNING


LABEL_BUDGET_HELP = ("Train on this many labelled reviews, a stratified subset nested inside every larger "
                     "budget (validation, test and the unlabelled reviews unchanged); 0 = all.")
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
@click.option("--register", default=True, show_default=True, type=bool,
              help="Log the teacher as an MLflow model and register it as kd-imdb-teacher (kd-imdb predict, "
              "mlflow models serve).")
@friendly_errors
def teacher(**kwargs) -> None:
    """Fine-tune the teacher and log it with its validation and test metrics."""
    cfg = teacher_mod.TeacherConfig(**kwargs)
    run_id = teacher_mod.run(cfg)
    if run_id and cfg.register:
        from mlflow import MlflowClient

        from kd_imdb.serving import TEACHER_NAME, register_teacher

        version = register_teacher(run_id, MlflowClient())
        click.echo(f"registered {TEACHER_NAME} version {version}: models:/{TEACHER_NAME}/{version}")
    if run_id:
        click.echo(f"teacher run: {run_id}")  # the last line: scripts read the run id there


@main.command("soft-labels")
@click.option("--teacher-run-id", "teacher_run_id", default="", callback=none_means_empty,
              help="Run id of a teacher run to label with.")
@click.option("--data", default="sample", show_default=True, help=DATA_HELP)
@click.option("--unsupervised", default=False, show_default=True, type=bool,
              help="Also label the unlabelled reviews (a transfer set).")
@click.option("--batch-size", "batch_size", default=64, show_default=True, type=int)
@click.option("--onnx-int8", "onnx_int8", default=False, show_default=True, type=bool,
              help="Label with ONNX Runtime int8 (faster on CPU); agreement with fp32 is logged.")
@click.option("--logits-file", "logits_file", default="", callback=none_means_empty,
              help="Register this existing logits file (id, logit_0, logit_1) instead of running the teacher.")
@click.option("--cache-dir", "cache_dir", default="checkpoints", show_default=True,
              help="Labelled chunks are cached here; a killed job resumes.")
@click.option("--chunk-size", "chunk_size", default=4096, show_default=True, type=int,
              help="Reviews per cached chunk: a killed job loses at most one chunk's work.")
@click.option("--stride", default=0, show_default=True, type=int,
              help="Score whole reviews: every max_len-token window, one every STRIDE tokens (0 = the teacher's "
              "own single view, e.g. head+tail).")
@click.option("--pooling", default="auto", show_default=True, type=click.Choice(["auto", "mean", "ends", "max"]),
              help="How window logits make a review's (with --stride); auto = best on validation.")
@friendly_errors
def soft_labels(**kwargs) -> None:
    """Write the teacher's logits for every review as one artifact keyed by review id."""
    from kd_imdb import soft_labels as soft_labels_mod

    run_id = soft_labels_mod.run(soft_labels_mod.SoftLabelsConfig(**kwargs))
    click.echo(f"soft labels run: {run_id}")


@main.command("linear-teacher")
@click.option("--data", default="sample", show_default=True, help=DATA_HELP)
@click.option("--unsupervised", default=False, show_default=True, type=bool, help="Also score the unlabelled reviews.")
@click.option("--kind", default="tfidf", show_default=True, type=click.Choice(["tfidf", "nbsvm"]),
              help="tfidf: TF-IDF + logistic regression; nbsvm: NB-SVM (Wang & Manning 2012) with the logistic loss.")
@click.option("--max-ngram", "max_ngram", default=2, show_default=True, type=int, help="Uni- to MAX_NGRAM-grams.")
@click.option("--c-grid", "c_grid", default="1,4,16", show_default=True, help="Regularisation values, chosen on validation.")
@click.option("--folds", default=5, show_default=True, type=int, help="Cross-fitting folds for the train logits.")
@click.option("--seed", default=0, show_default=True, type=int)
@friendly_errors
def linear_teacher(**kwargs) -> None:
    """A fast teacher: a linear model on n-grams (TF-IDF LR or NB-SVM), logged as a soft-labels run."""
    from kd_imdb import linear_teacher as linear

    click.echo(f"soft labels run: {linear.run(linear.LinearTeacherConfig(**kwargs))}")


@main.command("ensemble-labels")
@click.option("--runs", required=True, help="Comma-separated soft-labels run ids to combine.")
@click.option("--data", default="sample", show_default=True, help=DATA_HELP)
@click.option("--unsupervised", default=False, show_default=True, type=bool)
@click.option("--method", default="mean", show_default=True, type=click.Choice(["mean", "stack"]),
              help="mean: average the logits; stack: logistic regression on the margins, fitted on validation.")
@friendly_errors
def ensemble_labels(runs: str, data: str, unsupervised: bool, method: str) -> None:
    """An ensemble teacher from several teachers' logits, logged as a soft-labels run."""
    from kd_imdb import ensemble

    click.echo(f"soft labels run: {ensemble.ensemble(runs, data, unsupervised, method)}")


# Help for the generated options; their names, types and defaults come from kd_imdb.config.
HELP = {
    "data": DATA_HELP,
    "soft_labels_run_id": "Run id of a soft_labels run (needed for KD).",
    "hidden": "GRU units or CNN filters per width.",
    "bidirectional": "GRU only: a second GRU reads each review right to left (features of both directions).",
    "bigram_buckets": "A bag of hashed word bigrams beside the net (fastText), in this many buckets of "
                      "--bag-dim numbers each (e.g. 131072 x 16: 2.1M parameters); 0: none.",
    "bag_ngrams": "The bag's longest word n-gram: 2 = bigrams; 3 = bigrams and trigrams, hashed into the same "
                  "buckets (fastText's -wordNgrams 3). Needs --bigram-buckets.",
    "bag_dim": "Numbers per bucket of the bag. The output layer reads them linearly, so a bucket acts as one "
               "number whatever its width: 1 with 16 times the buckets keeps the parameters and cuts the "
               "n-grams that share a bucket 16-fold.",
    "max_len": "Words per review.",
    "lr_schedule": "constant, or cosine: Adam's lr decays to 0 over all epochs (kd_hard's hard ones included).",
    "epochs": "0 = origin's: 4 GRU, 3 CNN.",
    "alpha": "Weight of the soft term; 1 = soft only.",
    "hard_epochs": "Epochs on hard labels after KD (the origin's other arm).",
    "label_budget": LABEL_BUDGET_HELP,
    "mode": "pair: nested scratch and KD runs from identical initial weights; otherwise one arm: scratch, kd, "
            "kd_hard, kd_mse, kd_transfer, shuffled, label_smoothing, or kd@NAME (see --teachers).",
    "teachers": "More soft_labels runs as NAME=RUN_ID,...; the arm kd@NAME distils from teacher NAME "
                "(e.g. --teachers linear=RUN_ID --mode kd@linear).",
    # study
    "grid": "Students as arch:hidden,...;arch:hidden,...",
    "seeds": "Seed pairs per student.",
    "finetune_hard_epochs": "Adds a third arm: KD, then this many epochs on hard labels.",
    "arms": "Arms of every seed pair: scratch,kd,kd_mse,kd_transfer,shuffled,label_smoothing,kd@NAME (see "
            "--teachers; kd_hard via --finetune-hard-epochs).",
    "register": "Register the best student (by validation accuracy) as kd-imdb-student@champion.",
    # sweep
    "n_trials": "Finished (complete or pruned) trials to reach, over all workers.",
    "timeout": "Seconds per worker; 0 = none.",
    "sweep_alpha": "Also search alpha in [0, 1].",
    "study_name": "Default: derived from the student and soft labels.",
}
STUDY_HELP = {"soft_labels_run_id": "Run id of a soft_labels run.", "workers": "Single-thread worker processes.",
              "storage": "Optuna RDB URL (e.g. postgresql://user@host/db): workers on other machines join with "
                         "kd-imdb study-worker. Empty: local workers only."}
SWEEP_HELP = {"soft_labels_run_id": "Run id of a soft_labels run.", "seed": "Students' seed (same in every trial).",
              "storage": "Optuna storage; an RDB URL shared by workers on several machines.",
              "workers": "Local worker processes; 0: queue the trials and wait for kd-imdb sweep-worker on other "
                         "machines."}


def config_options(defaults: dict, help: dict[str, str] | None = None, required: tuple[str, ...] = ()):
    """One click option per name of a config's flat form, typed and defaulted by it (kd_imdb.config)."""
    help = {**HELP, **(help or {})}

    def decorate(fn):
        for name, default in reversed(defaults.items()):
            kind = {"arch": click.Choice(ARCHS), "lr_schedule": click.Choice(LR_SCHEDULES)}.get(name, type(default))
            extra = {"required": True} if name in required else {"default": default, "show_default": True}
            if default == "":
                extra["callback"] = none_means_empty
            fn = click.option("--" + name.replace("_", "-"), name, type=kind, help=help.get(name), **extra)(fn)
        return fn

    return decorate


@main.command()
@config_options(ArmConfig.defaults())
@friendly_errors
def student(**kwargs) -> None:
    """Train a student seed pair (scratch and KD) or one arm, and log it."""
    from kd_imdb import analysis, experiment

    cfg = ArmConfig.from_flat(**kwargs)
    results = experiment.run(cfg)
    name = cfg.student.name  # with the bag's suffix, as the runs are named
    table = (analysis.pair_table({name: results}) if cfg.distillation.mode == "pair"
             else analysis.arm_table(name, results))  # one arm: its own row, not a pair table with empty cells
    click.echo("\nTest metrics (model chosen on validation):\n" + table)


@main.command()
@config_options(StudyConfig.defaults(), STUDY_HELP, required=("soft_labels_run_id",))
@friendly_errors
def study(**kwargs) -> None:
    """Train the grid of seed pairs (resumable) and log statistics, tables and plots."""
    from kd_imdb import study as study_mod

    result = study_mod.run(StudyConfig.from_flat(**kwargs))
    click.echo(result.table)
    click.echo(f"study run: {result.study_id}")


@main.command()
@config_options(SweepConfig.defaults(), SWEEP_HELP, required=("soft_labels_run_id",))
@friendly_errors
def sweep(**kwargs) -> None:
    """Search the KD temperature (and alpha) with Optuna, maximising validation accuracy."""
    from kd_imdb import sweep as sweep_mod

    result = sweep_mod.run(SweepConfig.from_flat(**kwargs))
    click.echo(f"best {result['best_params']} (validation accuracy {result['best_val_accuracy']:.4f}); "
               f"trials {result['states']}; sweep run: {result['run_id']}")


@main.command("sweep-worker")
@click.option("--storage", required=True, help="The sweep's Optuna RDB URL.")
@click.option("--study-name", "study_name", required=True, help="The sweep's Optuna study name.")
@friendly_errors
def sweep_worker(storage: str, study_name: str) -> None:
    """Join a running sweep from another machine: run its queued trials."""
    from kd_imdb import sweep as sweep_mod
    from kd_imdb import tracking

    tracking.setup_tracking()
    sweep_mod.join(storage, study_name)


@main.command()
@click.option("--sweep-run-id", "sweep_run_id", required=True, help="Run id of a sweep run.")
@click.option("--seeds", default=5, show_default=True, type=int, help="Fresh seed pairs.")
@click.option("--workers", default=2, show_default=True, type=int)
@friendly_errors
def confirm(**kwargs) -> None:
    """Retrain the sweep's best T on fresh seed pairs against scratch and T=2, with CIs."""
    from kd_imdb import sweep as sweep_mod

    click.echo(sweep_mod.confirm(**kwargs))


@main.command("study-report")
@click.option("--study-run-id", "study_run_id", required=True, help="The run id the study command printed.")
@friendly_errors
def study_report(study_run_id: str) -> None:
    """Rebuild a study's tables, CSVs and plots from its finished arm runs (also of a running or stopped
    study) and log them to the study run's results/ again."""
    from kd_imdb import study as study_mod

    click.echo(study_mod.report(study_run_id))


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--arms", default="", help="Comma-separated arms to choose from (default: all).")
@click.option("--by", default="val_accuracy", show_default=True, type=click.Choice(list(SELECTION)),
              help="The validation measure the champion is chosen on: the highest accuracy or the lowest log-loss.")
@friendly_errors
def register(files: tuple[str, ...], arms: str, by: str) -> None:
    """Register the best student by a validation measure (--by) among the arm runs listed in studies'
    runs.csv FILES (e.g. seeds trained in two studies) as kd-imdb-student@champion, and the best of each
    architecture as @best-<arch>. The runs must be on the tracking server."""
    import pandas as pd
    from mlflow import MlflowClient

    from kd_imdb import tracking
    from kd_imdb.serving import REGISTERED_NAME, register_best

    runs = pd.concat([pd.read_csv(f) for f in files])
    # every column register_best and its version descriptions read, checked before anything is registered
    needed = {"run_id", "arm", "arch", "hidden", "configuration", "seed", "val_accuracy", "test_accuracy", by}
    missing = needed - set(runs.columns)
    if missing:
        raise ValueError(f"{', '.join(files)}: no column {', '.join(sorted(missing))}; pass a study's results/runs.csv")
    if arms:
        runs = runs[runs["arm"].isin(arms.split(","))]
        if runs.empty:
            raise ValueError(f"no run of the arms {arms!r} in {', '.join(files)}; drop --arms or name arms they hold")
    tracking.setup_tracking()
    for run_id in runs["run_id"]:  # every run checked before any is registered
        tracking.require_run(run_id, "the arm")
    for alias, version in register_best(runs, MlflowClient(), by).items():
        click.echo(f"{REGISTERED_NAME}@{alias}: version {version}")


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--baseline", default="scratch", show_default=True, help="The arm every other arm is compared with.")
@click.option("--arms", default="", help="Comma-separated arms to compare (default: all).")
@click.option("--compact", "layout", flag_value="compact", help="One table, a row per student and arm.")
@click.option("--pool", "layout", flag_value="pool", help="One row per arm, pooled over every student and seed.")
@click.option("--trend", "layout", flag_value="trend",
              help="One row per arm and architecture: the slope of each pair's difference on log2 hidden size.")
@friendly_errors
def compare(files: tuple[str, ...], baseline: str, arms: str, layout: str | None) -> None:
    """Pair the arms of several studies from their runs.csv files and print one table.

    Each FILE is a study's runs.csv, optionally renaming its arms and naming its pairing group:
    PATH:old=new,old=new#GROUP (e.g. the kd arm of a study distilled from the linear teacher becomes
    kd_linear). A (student, seed, arm) found in two files must have the same test metrics, or the
    studies are not paired (another machine, device, data or version) and the command stops; files
    marked with a GROUP pair only among themselves, with their own scratch arm. McNemar needs each
    run's test predictions, which runs.csv does not hold; a study's own results.md has it.
    """
    from kd_imdb import analysis

    click.echo(analysis.compare(list(files), baseline, [a for a in arms.split(",") if a], layout or "study"))


@main.command("study-worker")
@click.option("--storage", required=True, help="The Optuna RDB URL the study was started with.")
@click.option("--study-name", "study_name", required=True, help="Printed by the study command (kd_imdb-study-...).")
@friendly_errors
def study_worker(storage: str, study_name: str) -> None:
    """Join a running study from another machine: train queued seed pairs until none is left."""
    from kd_imdb import study as study_mod
    from kd_imdb import tracking

    tracking.setup_tracking()
    click.echo(f"trained {study_mod.join(storage, study_name)} seed pair(s)")


@main.command()
@click.option("--teacher-model", "teacher_model", default="packaged", show_default=True,
              help="Teacher checkpoint ('packaged', 'tiny', hub id or folder).")
@click.option("--teacher-epochs", "teacher_epochs", default=2.5, show_default=True, type=float,
              help="900 sample reviews: a few epochs are needed.")
@click.option("--max-len", "max_len", default=128, show_default=True, type=int, help="Teacher tokens per review.")
@click.option("--hidden", default=64, show_default=True, type=int, help="GRU student size.")
@click.option("--student-epochs", "student_epochs", default=8, show_default=True, type=int,
              help="The sample is small: more epochs than the origin's 4.")
@click.option("--seed", default=0, show_default=True, type=int)
@friendly_errors
def demo(**kwargs) -> None:
    """Teacher, soft labels and three GRU students of one seed (scratch, KD, KD with the unlabelled
    reviews as a transfer set) on the shipped sample, end to end, then a results table."""
    from kd_imdb import demo as demo_mod

    result = demo_mod.run(**kwargs)
    click.echo(f"\nteacher ({kwargs['teacher_model']}) test accuracy: {result.teacher_test_accuracy:.3f}")
    click.echo("\nTest metrics (each student chosen on validation; one seed, so read the gaps as an example, "
               "not a finding):\n" + result.table)
    click.echo(f"\ndemo run {result.run_id} in {result.tracking_uri}")
    if result.tracking_uri.startswith("sqlite:///"):
        click.echo(f"open the MLflow UI:  mlflow ui --backend-store-uri {result.tracking_uri}   (then http://127.0.0.1:5000)")
    click.echo("where to look: experiment kd_imdb > run 'demo' (expand it): the teacher, the soft labels and the "
               f"three 'gru-{kwargs['hidden']} s{kwargs['seed']} ...' student runs; tick the three and Compare for "
               "their curves (epoch_val_accuracy); the Dataset column shows what each trained on; the demo run's "
               "Artifacts tab holds this table (results.md)")


def read_reviews(path: str) -> list[str]:
    """Reviews from a file (``-`` = standard input): one per line, or JSON Lines with a ``text`` field."""
    import json

    try:
        raw = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise ValueError(f"--input {path}: cannot read it ({exc.strerror}); pass a text or JSONL file, or - for stdin") from exc
    lines = [(n, line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"--input {path}: no reviews; write one review per line or one JSON object per line")
    if not lines[0][1].lstrip().startswith("{"):
        return [line for _, line in lines]
    texts = []
    for n, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--input {path}, line {n}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
        if not isinstance(record, dict) or "text" not in record:
            raise ValueError(f"--input {path}, line {n}: no 'text' field; write objects like {{\"text\": \"...\"}}")
        texts.append(record["text"])
    return texts


@main.command()
@click.option("--model", "model_uri", default="models:/kd-imdb-student@champion", show_default=True,
              help="A pyfunc student or teacher: models:/name@alias (kd-imdb-student@champion), "
              "models:/kd-imdb-teacher/<version>, runs:/<id>/<model name> or a local folder.")
@click.option("--input", "input_path", default="",
              help="Read reviews from this file (- = stdin): one per line, or JSON Lines with a 'text' field. "
              "Long reviews can exceed the command line's length limit.")
@click.option("--int8", is_flag=True, help="Serve a student with int8 GRU and linear weights (faster on a CPU).")
@click.argument("texts", nargs=-1)
@friendly_errors
def predict(model_uri: str, input_path: str, int8: bool, texts: tuple[str, ...]) -> None:
    """Print the label and positive-class probability of each review TEXT (or of each review in --input)."""
    from kd_imdb import tracking
    from kd_imdb.serving import predict_texts, texts_from

    if bool(texts) == bool(input_path):
        raise ValueError("give review texts as arguments or --input FILE (- for stdin), not both and not neither")
    reviews = read_reviews(input_path) if input_path else list(texts)
    tracking.setup_tracking()
    texts_from(reviews)  # bad input fails before the model loads
    try:
        out = predict_texts(model_uri, reviews, int8)
    except Exception as exc:
        if isinstance(exc, ValueError):
            raise
        raise ValueError(f"cannot load model {model_uri} ({str(exc).splitlines()[0][:160]}); "
                         "check the URI and MLFLOW_TRACKING_URI") from exc
    for text, (_, row) in zip(reviews, out.iterrows()):
        sentiment = "positive" if row["label"] == 1 else "negative"
        click.echo(f"{sentiment}\t{row['probability']:.4f}\t{text[:60]}")


@main.command()
@click.option("--model", "model_uri", default="models:/kd-imdb-student@champion", show_default=True,
              help="A pyfunc student (models:/name@alias, runs:/<id>/model, a folder), an arm run's student "
              "(runs:/<arm run>/student), or a teacher run's model (runs:/<teacher run>/model).")
@click.option("--data", default="sample", show_default=True,
              help="Labelled reviews: a CSV/JSONL/parquet file with text and label (read whole), a folder "
              "of {train,test}.parquet, 'sample' or a hub id.")
@click.option("--split", default="test", show_default=True,
              help="The split to score when the data has a split column; 'all' = every labelled row.")
@click.option("--int8", is_flag=True, help="Score a student with int8 GRU and linear weights, as it would serve.")
@friendly_errors
def evaluate(model_uri: str, data: str, split: str, int8: bool) -> None:
    """Score a student or teacher on labelled reviews as one MLflow run: metrics, confusion table,
    reliability plot and per-review predictions (how to check a model on your own domain)."""
    from kd_imdb import evaluation

    run_id, metrics = evaluation.run(evaluation.EvaluateConfig(model=model_uri, data=data, split=split, int8=int8))
    click.echo(f"accuracy {metrics['accuracy']:.4f} [{metrics['accuracy_ci_low']:.4f}, {metrics['accuracy_ci_high']:.4f}]"
               f"  f1 {metrics['f1']:.4f}  ECE {metrics['ece']:.4f}  ({metrics['reviews_per_s']:.0f} reviews/s)")
    click.echo(f"evaluation run {run_id}: confusion table and reliability plot under evaluation/")


if __name__ == "__main__":
    main()
