"""MLflow plumbing shared by the entry points: the tracking URI, the reachability check, runs, params.

The embedded default is a local SQLite store (``sqlite:///mlflow.db``, artifacts in ``./mlruns``), so
nothing needs a server. ``MLFLOW_TRACKING_URI`` points every entry point at a real server instead.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import mlflow
import requests
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema

from kd_imdb.data import SAMPLE_PATH, ids_hash

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT = "kd_imdb"  # every entry point logs here unless MLFLOW_EXPERIMENT_NAME (or --experiment-name) says otherwise
EXPERIMENT_DESCRIPTION = (
    "Knowledge distillation of a transformer teacher into tiny GRU/CNN students on IMDB (kd_imdb). "
    "Runs: teacher, soft_labels, study (configuration > seed pair > arm), sweep (trials), demo. "
    "Filter a study's arms with tags.kd_imdb.study = '<study run id>'."
)
DESCRIPTION_TAG = "mlflow.note.content"  # a run's or an experiment's description in the UI
# MLflow 3's UI opens an experiment of this kind on its training runs (not on the GenAI traces page)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
HOST_TAG, PID_TAG = "kd_imdb.host", "kd_imdb.pid"  # the process that owns a run: a killed one's runs are closed


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI and the fix."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def setup_tracking(experiment: str | None = None) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI`` (or the local SQLite default) and check that it answers.

    An unreachable server would otherwise make MLflow retry for minutes; one quick probe with retries
    off gives a one-line error instead.
    """
    uri = tracking_uri()
    # MLflow prints a "View run ... at: URL" line whenever a run on a server ends: dozens per study.
    # The commands print the run ids that matter; MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false brings them back.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # And a "Downloading artifacts" bar for every small file read back: dozens when a study is analysed.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith(("postgresql", "mysql", "mssql")):
        # A store shared by many worker processes: pooled idle connections (up to 15 a process) would
        # exhaust the database's max_connections, so each connection closes after use.
        os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
    mlflow.set_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except Exception as exc:
            raise TrackingError(
                f"tracking server {uri} is unreachable ({type(exc).__name__}); start it "
                "(mlflow server ...) or unset MLFLOW_TRACKING_URI to use the local SQLite store"
            ) from exc
    close_orphaned_runs()
    chosen = any(os.environ.get(v) for v in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"))
    if mlflow.active_run() is not None:
        return uri  # a stage inside another (the demo): its experiment is set up already
    if experiment and not chosen:
        describe_experiment(mlflow.set_experiment(experiment).experiment_id)
    elif run_id := os.environ.get("MLFLOW_RUN_ID"):  # the run ``mlflow run`` created
        describe_experiment(MlflowClient().get_run(run_id).info.experiment_id)
    elif name := os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        describe_experiment(mlflow.set_experiment(name).experiment_id)
    return uri


def describe_experiment(experiment_id: str) -> None:
    """Give the experiment a description (unless it has one, or is MLflow's "Default") and the kind tag
    that makes the UI open on its runs; a user's own tags are left alone."""
    client = MlflowClient()
    tags = client.get_experiment(experiment_id).tags
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if DESCRIPTION_TAG not in tags and experiment_id != "0":
        client.set_experiment_tag(experiment_id, DESCRIPTION_TAG, EXPERIMENT_DESCRIPTION)


def system_metrics_on() -> bool:
    """Whether long runs sample CPU, memory, disk and network (MLflow's system metrics, every 10 s):
    on unless KD_IMDB_SYSTEM_METRICS is 0 or false."""
    return os.environ.get("KD_IMDB_SYSTEM_METRICS", "1").lower() not in ("0", "false")


@contextlib.contextmanager
def start_run(run_name: str | None = None, nested: bool = False, tags: dict | None = None,
              system_metrics: bool = False, run_id: str | None = None,
              parent_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run``, nested under the active run if there is one; ``system_metrics``: a long
    run (teacher, soft labels, study, sweep) also logs MLflow's system metrics (``system_metrics_on``).
    ``run_id`` reopens a run (a study's seed pair); ``parent_run_id`` nests under a run of another process.

    At top level it resumes the run ``mlflow run`` created (MLFLOW_RUN_ID), so a stage called from
    another (the demo) lands under it. On an exception the run ends FAILED (mlflow's context manager
    does that) and the exception goes on; stopped by Ctrl-C or SIGTERM (``stop_on_sigterm``), it ends
    KILLED: nothing in it failed, and a rerun picks up the work.
    """
    nested = nested or mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, nested=nested, tags={**owner_tags(), **(tags or {})},
                          log_system_metrics=system_metrics and system_metrics_on(), run_id=run_id,
                          parent_run_id=parent_run_id) as run:
        try:
            yield run
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")  # the innermost run first: the exception passes through each open one
            raise


class Stopped(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, a scheduler's stop or time limit); raised where the process was."""


STOPPED_EXIT_STATUS = 128 + signal.SIGTERM  # 143: what a shell reports for a process ended by SIGTERM


def stop_on_sigterm() -> None:
    """Let SIGTERM stop this process as Ctrl-C does, by an exception, so that on the way out each run
    it holds ends KILLED (``start_run``) and Optuna marks its trial FAIL. Python's default ends the
    process on the spot and leaves its runs RUNNING until the next command on this machine closes them
    (``close_orphaned_runs``). A second SIGTERM while closing is ignored, so the closing finishes.

    Only the main thread may set a handler (``signal.signal`` raises ValueError elsewhere): called from
    another thread (a command invoked in-process by a test runner's thread) it leaves Python's default."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_stopped)


def _raise_stopped(signum: int, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(f"stopped by signal {signum}")


def owner_tags() -> dict[str, str]:
    """Tags naming the process that runs a run, so that a run whose process died can be closed."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with this pid still exists (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def close_orphaned_runs() -> list[str]:
    """Close KILLED every run left RUNNING by a process of this machine that is gone (SIGKILL, a crash,
    a lost power supply): such a run would otherwise stay RUNNING forever. Runs of other machines are
    left alone; only their own machine can tell whether they still run. Returns the closed run ids."""
    client = MlflowClient()
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    closed = []
    for run in client.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"):
        pid = int(run.data.tags.get(PID_TAG, "0") or 0)
        if pid and pid != os.getpid() and not process_alive(pid):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    if closed:
        log.warning("closed %d run(s) KILLED whose process on %s is gone: %s", len(closed), host, ", ".join(closed))
    return closed


def log_params_once(params: dict) -> None:
    """Log params the active run does not hold yet.

    ``mlflow run`` logs the entry point's parameters itself (as the strings the user typed); logging
    them again from code could only repeat them under other spellings, so those already present are
    left alone.
    """
    run = mlflow.active_run()
    present = MlflowClient().get_run(run.info.run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in present}
    if fresh:
        mlflow.log_params(fresh)


def log_config(config: dict) -> None:
    """The run's resolved configuration as ``config.json`` (typed JSON, defaults filled in), logged
    beside its params: later stages read this file, never the param strings."""
    mlflow.log_dict(config, "config.json")


VALIDATION_TAG = "kd_imdb.validation_hash"
SCHEMA = Schema([ColSpec("string", "text"), ColSpec("long", "label")])


def dataset_source(source: str) -> DatasetSource:
    """Where reviews came from, as MLflow names a dataset's source: a local file or folder (the shipped
    sample included), or a Hugging Face hub id."""
    path = SAMPLE_PATH if source in ("sample", "", None) else Path(source)
    if path.exists():
        return get_dataset_source_from_json(json.dumps({"uri": str(path.resolve())}), source_type="local")
    return HuggingFaceDatasetSource(path=source)


def log_datasets(source: str, splits: Mapping[str, Sequence[str]], content_hash: str = "") -> None:
    """Each split as a dataset input of the active run (the UI's Dataset column and filter): named
    ``imdb-<split>``, its digest the ``ids_hash`` of its review ids, so runs that read the same
    reviews show the same dataset; ``content_hash`` is the data fingerprint soft labels carry."""
    src = dataset_source(source)
    for split, ids in splits.items():
        tags = {"reviews": str(len(ids)), **({"kd_imdb.data_hash": content_hash} if content_hash else {})}
        dataset = MetaDataset(src, name=f"imdb-{split}", digest=ids_hash(ids), schema=SCHEMA)
        mlflow.log_input(dataset, context=split, tags=tags)


def log_validation_split(ids, with_ids: bool = True) -> None:
    """Tag the active run with its validation split's hash (and log the ids as data/validation_ids.txt):
    every stage carves the split the same way, and each run shows which one it selected on."""
    mlflow.set_tag(VALIDATION_TAG, ids_hash(ids))
    if with_ids:
        mlflow.log_text("\n".join(sorted(ids)), "data/validation_ids.txt")


def check_validation_split(run_id: str, ids, what: str) -> None:
    """Refuse to build on run ``run_id`` if it selected on another validation split than ``ids``: its logits on
    this stage's validation reviews could come from reviews it trained on. Runs from before the tag pass."""
    theirs = MlflowClient().get_run(run_id).data.tags.get(VALIDATION_TAG)
    if theirs and theirs != ids_hash(ids):
        raise TrackingError(f"{what} run {run_id} selected on another validation split ({theirs}, here {ids_hash(ids)}); "
                            "train it with the default --val-fraction 0.1 on the same data")


def load_config(run_id: str) -> dict | None:
    """A run's ``config.json``; None for runs logged before configurations were (read their params)."""
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json")
    except Exception:  # MlflowException, OSError: the artifact is not there
        return None


def log_dict_artifact(obj: dict, name: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), name)


def require_run(run_id: str, what: str = ""):
    """The run ``run_id``; a missing one is a one-line error naming ``what`` it should be. Called before
    a stage opens its own run, so a bad id leaves nothing behind."""
    try:
        return MlflowClient().get_run(run_id)
    except Exception as exc:
        raise TrackingError(f"{what + ' ' if what else ''}run {run_id!r} not found in {tracking_uri()}; check the "
                            "run id and MLFLOW_TRACKING_URI") from exc


def download_artifact(run_id: str, path: str) -> Path:
    """Download ``path`` of ``run_id`` into a temp dir; a missing run or file is a one-line error."""
    require_run(run_id)
    try:
        local = MlflowClient().download_artifacts(run_id, path, tempfile.mkdtemp(prefix="kd_imdb_"))
    except Exception as exc:
        raise TrackingError(f"run {run_id} has no artifact {path!r}; is it the right kind of run?") from exc
    return Path(local)
