"""The ``study`` entry point: the origin grid with paired seeds, resumable, run by parallel workers.

Run tree in MLflow::

    study                       (parent; tables, CSV and plots as artifacts)
      gru-64                    (one per student configuration)
        gru-64 seed 0           (one per seed pair)
          scratch, kd           (the two arms: identical initial weights, identical batches)

Resume: a study is identified by its parameters and soft labels (tag ``kd_imdb.study_key``), but not by
its arms. Running it again reuses its runs, skips arms that finished, and retrains only arms that failed
or were killed (those runs are marked KILLED and left for the record), so every (configuration, seed,
arm) ends with exactly one FINISHED run. Running it with more arms extends it: only the new arms train,
against the scratch partners it already has.

Speed: every worker is a process with one intra-op thread that prepares the data once and then trains
whole seed pairs; on a small CPU, single-thread workers beat one process using all cores, because
tiny GRU/CNN steps cannot keep several threads busy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass

import pandas as pd

from kd_imdb.experiment import StudentConfig
from kd_imdb.students import StudentSpec

log = logging.getLogger(__name__)

DEFAULT_GRID = "gru:16,32,64,128,256;cnn:64,128,256"
FINISHED, KILLED = "FINISHED", "KILLED"


@dataclass
class StudyConfig:
    """Parameters of the ``study`` entry point."""

    soft_labels_run_id: str = ""
    data: str = "sample"
    grid: str = DEFAULT_GRID
    seeds: int = 5
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1
    epochs: int = 0  # 0 = origin's: 4 GRU, 3 CNN
    finetune_hard_epochs: int = 0  # hard-label epochs after KD: adds the arm kd_hard (the origin's other arm)
    arms: str = "scratch,kd"  # any of experiment.ARMS; scratch is every comparison's baseline
    temperature: float = 2.0
    alpha: float = 1.0
    embedding_dim: int = 128
    vocab_size: int = 20000
    max_len: int = 256
    lr: float = 2e-3
    batch_size: int = 64
    workers: int = 2
    register: bool = True  # register the best student (by validation accuracy) in the model registry
    storage: str = ""  # an Optuna RDB URL: workers on several machines share the grid through it
    teachers: str = ""  # more soft_labels runs, "NAME=RUN_ID,...", distilled by the arms kd@NAME
    label_budget: int = 0  # > 0: every student trains on this many labelled reviews (nested, stratified)

    def __post_init__(self) -> None:
        if not self.soft_labels_run_id:
            raise ValueError("the study needs soft_labels_run_id (run the soft_labels entry point first)")
        if self.seeds < 1 or self.workers < 0 or (self.workers == 0 and not self.storage):
            raise ValueError("seeds must be >= 1 and workers >= 1 (0 only with a storage that other workers join)")
        self.configurations()  # validates the grid
        from kd_imdb.experiment import ARMS, is_arm

        teachers = self.student(("gru", 16), 0).teacher_runs()  # also validates the student parameters
        unknown = [a for a in self.arm_list() if not is_arm(a, teachers)]
        if unknown or "scratch" not in self.arm_list():
            raise ValueError(f"arms must include scratch and come from {list(ARMS)} or kd@NAME with NAME in "
                             f"--teachers; got {self.arms!r} (teachers {self.teachers!r})")

    def configurations(self) -> list[tuple[str, int]]:
        """``"gru:16,32;cnn:64"`` -> [("gru", 16), ("gru", 32), ("cnn", 64)]."""
        out = []
        try:
            for part in filter(None, (p.strip() for p in self.grid.split(";"))):
                arch, sizes = part.split(":")
                out += [(arch.strip(), int(h)) for h in sizes.split(",")]
        except ValueError as exc:
            raise ValueError(f"grid {self.grid!r} is malformed; write it like {DEFAULT_GRID!r}") from exc
        if not out:
            raise ValueError("grid is empty")
        for arch, hidden in out:  # every student of the grid, before any run opens
            try:
                StudentSpec(arch=arch, hidden=hidden)
            except ValueError as exc:
                raise ValueError(f"grid {self.grid!r}: {arch}:{hidden}: {exc}") from exc
        return out

    def student(self, configuration: tuple[str, int], seed: int) -> StudentConfig:
        arch, hidden = configuration
        return StudentConfig(data=self.data, soft_labels_run_id=self.soft_labels_run_id, arch=arch, hidden=hidden,
                             embedding_dim=self.embedding_dim, vocab_size=self.vocab_size, max_len=self.max_len,
                             epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=seed, mode="pair",
                             temperature=self.temperature, alpha=self.alpha,
                             hard_epochs=self.finetune_hard_epochs, teachers=self.teachers,
                             label_budget=self.label_budget)

    def arm_list(self) -> tuple[str, ...]:
        """The arms of every seed pair; ``kd_hard`` joins when ``finetune_hard_epochs`` is set."""
        arms = [a.strip() for a in self.arms.split(",") if a.strip()]
        if self.finetune_hard_epochs and "kd_hard" not in arms:
            arms.append("kd_hard")
        return tuple(arms)

    def key(self) -> str:
        """What makes two studies the same study: neither the number of workers nor the arms do, so a
        study run again with more arms trains only those. The teachers do: kd@linear of another linear
        teacher is another arm."""
        return self._hash(exclude=("workers", "register", "storage", "arms"))

    def legacy_key(self) -> str:
        """The key of studies started before arms could be added (it hashed the arms too)."""
        return self._hash(exclude=("workers", "register", "storage"))

    def _hash(self, exclude: tuple[str, ...]) -> str:
        fields = {k: v for k, v in asdict(self).items() if k not in exclude}
        for newer in ("teachers", "label_budget"):  # studies from before these options keep their key
            if not fields[newer]:
                del fields[newer]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def config_name(configuration: tuple[str, int]) -> str:
    return f"{configuration[0]}-{configuration[1]}"


# ----------------------------------------------------------------------------- the run tree


def _child(client, experiment_id: str, parent_id: str, tag: str, value: str, name: str, extra_tags: dict | None = None):
    """The child run of ``parent_id`` tagged ``tag=value``, created if absent (newest wins)."""
    found = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}' and tags.`{tag}` = '{value}'",
                               order_by=["attributes.start_time DESC"])
    if found:
        return found[0].info.run_id
    tags = {"mlflow.parentRunId": parent_id, tag: value, "mlflow.runName": name, **(extra_tags or {})}
    return client.create_run(experiment_id, tags=tags, run_name=name).info.run_id


def plan(cfg: StudyConfig, client, experiment_id: str, study_id: str) -> tuple[list[dict], list[dict]]:
    """Create (or find) every configuration and pair run; return (todo, done) pair descriptions."""
    todo, done = [], []
    for configuration in cfg.configurations():
        name = config_name(configuration)
        config_id = _child(client, experiment_id, study_id, "kd_imdb.config", name, name, {"kd_imdb.stage": "study_config"})
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            pair_id = _child(client, experiment_id, config_id, "kd_imdb.seed", str(seed), f"{name} seed {seed}",
                             {"kd_imdb.stage": "student_pair", "kd_imdb.config": name})
            if not cfg.storage:  # shared grids: a live remote worker may hold the pair; its taker checks
                close_stale_runs(client, experiment_id, pair_id)
            arms = arm_runs(client, experiment_id, pair_id)
            missing = [a for a in cfg.arm_list() if a not in arms or arms[a].info.status != FINISHED]
            item = {"configuration": configuration, "seed": seed, "pair_id": pair_id, "config_id": config_id,
                    "missing": missing}
            (todo if missing else done).append(item)
    return todo, done


def arm_runs(client, experiment_id: str, pair_id: str) -> dict:
    """The arm runs under a pair, one per arm: its FINISHED run if any, else its newest attempt."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{pair_id}'",
                              order_by=["attributes.start_time DESC"])
    out = {}
    for run in runs:
        arm = run.data.tags.get("kd_imdb.arm")
        if arm not in out or (run.info.status == FINISHED and out[arm].info.status != FINISHED):
            out[arm] = run
    return out


def close_stale_runs(client, experiment_id: str, pair_id: str) -> None:
    """Runs left RUNNING by a killed worker are marked KILLED (kept for the record, never counted)."""
    for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{pair_id}'"):
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=KILLED)


# ----------------------------------------------------------------------------- workers


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory): a fault, not bad input; a rerun resumes."""


def _worker(cfg: StudyConfig, items: "mp.Queue", tracking_uri: str) -> None:
    """Prepare the data once, then train the missing arms of each pair taken from ``items``."""
    import mlflow
    import torch

    from kd_imdb import experiment

    die_with_parent()
    torch.set_num_threads(1)
    mlflow.set_tracking_uri(tracking_uri)
    prepared = None
    while (item := items.get()) is not None:
        student = cfg.student(tuple(item["configuration"]), item["seed"])
        if prepared is None:
            _, tok, splits = experiment.prepare(student, transfer="kd_transfer" in cfg.arm_list())
            prepared = (tok, splits)
        tok, splits = prepared
        train_missing_arms(student, item["pair_id"], item["missing"], tok, splits)


def train_missing_arms(student: StudentConfig, pair_id: str, missing: list[str], tok, splits: dict) -> None:
    """Reopen the pair run, train each missing arm as a nested run, then summarise the pair."""
    import mlflow

    from kd_imdb import experiment

    from kd_imdb import tracking

    with mlflow.start_run(run_id=pair_id, tags=tracking.owner_tags()):  # this worker owns the pair now
        for arm in missing:
            with mlflow.start_run(run_name=arm, nested=True, tags=tracking.owner_tags()):
                experiment.train_arm(student, arm, tok, splits)
        _log_pair_summary(mlflow.tracking.MlflowClient(), pair_id)


def die_with_parent() -> None:
    """On Linux, a worker gets SIGKILL when the study process dies (even by SIGKILL): an orphan would
    otherwise finish its arm after a rerun had already retrained it, and the cell would count twice."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _log_pair_summary(client, pair_id: str) -> None:
    """On the pair run: each arm's test metrics and KD minus scratch."""
    import mlflow

    run = client.get_run(pair_id)
    arms = arm_runs(client, run.info.experiment_id, pair_id)
    m = {a: r.data.metrics for a, r in arms.items() if r.info.status == FINISHED}
    # Metric keys allow no "@": kd@linear logs kd.linear_test_accuracy.
    mlflow.log_metrics({f"{a.replace('@', '.')}_test_accuracy": m[a]["test_accuracy"] for a in m})
    if {"scratch", "kd"} <= set(m):
        mlflow.log_metric("kd_minus_scratch_test_accuracy", m["kd"]["test_accuracy"] - m["scratch"]["test_accuracy"])


def run_workers(cfg: StudyConfig, todo: list[dict], tracking_uri: str) -> None:
    """Spawned processes (fresh interpreters: no forked OpenMP state) share one queue of pairs."""
    if not todo:
        return
    ctx = mp.get_context("spawn")
    items = ctx.Queue()
    # Largest models first, so the long ones do not end up alone at the tail.
    for item in sorted(todo, key=lambda i: -i["configuration"][1]):
        items.put(item)
    n = min(cfg.workers, len(todo))
    for _ in range(n):
        items.put(None)
    procs = [ctx.Process(target=_worker, args=(cfg, items, tracking_uri)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    check_workers(procs)


def check_workers(procs: list) -> None:
    """Raise WorkerLost if a worker process died (a non-zero exit code) after the others finished."""
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise WorkerLost(f"{len(failed)} study worker(s) died (exit codes {failed}); the pairs they held are not "
                         "finished: rerun the same command to train them")


# ----------------------------------------------------------------------------- the entry point


def collect(client, experiment_id: str, study_id: str) -> pd.DataFrame:
    """One row per finished arm run of the study: configuration, seed, arm, params and metrics."""
    rows = []
    configs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{study_id}'")
    for config in configs:
        for pair in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{config.info.run_id}'"):
            for arm, run in arm_runs(client, experiment_id, pair.info.run_id).items():
                if run.info.status != FINISHED:
                    continue
                rows.append({"configuration": config.data.tags["kd_imdb.config"],
                             "arch": run.data.params["arch"], "hidden": int(run.data.params["hidden"]),
                             "seed": int(pair.data.tags["kd_imdb.seed"]), "arm": arm, "run_id": run.info.run_id,
                             **run.data.metrics})
    return pd.DataFrame(rows).sort_values(["arch", "hidden", "seed", "arm"]).reset_index(drop=True) if rows else pd.DataFrame()


def report(study_id: str) -> str:
    """Analyse a study again from the arm runs that have FINISHED, also while it runs or after it was
    stopped, and log ``results/`` to the study run anew; returns the table."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from kd_imdb import tracking
    from kd_imdb.analysis import analyse_and_log

    tracking.setup_tracking("kd_imdb")
    client = MlflowClient()
    try:
        study = client.get_run(study_id)
    except MlflowException as exc:
        raise ValueError(f"no run {study_id!r} on the tracking server; pass the id the study command printed") from exc
    if study.data.tags.get("kd_imdb.stage") != "study" or "kd_imdb.resumes" in study.data.tags:
        raise ValueError(f"run {study_id} is not a study's first run; pass the id the study command printed")
    return analyse_and_log(collect(client, study.info.experiment_id, study_id), study_id, client)


def check_inputs(cfg: StudyConfig) -> None:
    """What can only be checked against the tracking server and the storage, checked before the first run
    opens: the soft-labels runs exist, and the Optuna storage answers."""
    from kd_imdb import tracking

    tracking.require_run(cfg.soft_labels_run_id, "soft-labels")
    for name, run_id in cfg.student(cfg.configurations()[0], 0).teacher_runs().items():
        tracking.require_run(run_id, f"teacher {name!r} soft-labels")
    if cfg.storage:
        from kd_imdb.grid import make_storage

        make_storage(cfg.storage)


def run(cfg: StudyConfig) -> str:
    """Plan the grid, train what is missing with the workers, then analyse and log the results."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from kd_imdb import tracking
    from kd_imdb.analysis import analyse_and_log

    uri = tracking.setup_tracking("kd_imdb")
    check_inputs(cfg)
    client = MlflowClient()
    key = cfg.key()
    with tracking.start_run(run_name="study", tags={"kd_imdb.stage": "study"}) as active:
        experiment_id = active.info.experiment_id
        previous = [run for k in (key, cfg.legacy_key())
                    for run in client.search_runs([experiment_id], f"tags.`kd_imdb.study_key` = '{k}'")]
        previous.sort(key=lambda run: run.info.start_time)
        study_id = previous[0].info.run_id if previous else active.info.run_id
        if study_id != active.info.run_id:
            # This invocation's run points at the study it resumed; the study's runs stay in one tree.
            # Its params say what this invocation asked for (more arms, say); the study keeps its own.
            mlflow.set_tags({"kd_imdb.resumes": study_id})
        client.set_tag(study_id, "kd_imdb.study_key", key)  # on a resumed study, a legacy key gives way
        tracking.log_params_once(asdict(cfg))
        todo, done = plan(cfg, client, experiment_id, study_id)
        log.info("study %s: %d seed pairs to train, %d already finished", study_id, len(todo), len(done))
        mlflow.log_metrics({"pairs_todo": len(todo), "pairs_done_before": len(done)})
        t0 = time.time()
        if cfg.storage:
            from kd_imdb import grid

            grid.run_shared(cfg, todo + done, uri, study_id)
        else:
            run_workers(cfg, todo, uri)
        mlflow.log_metric("train_wall_seconds", time.time() - t0)
        for item in todo + done:  # configuration runs end when all their pairs have
            client.set_terminated(item["config_id"], status=FINISHED)
        frame = collect(client, experiment_id, study_id)
        analyse_and_log(frame, study_id, client)
        if cfg.register and not frame.empty:
            from kd_imdb.serving import register_best

            versions = register_best(frame, client)
            mlflow.set_tags({f"registered.{alias}": version for alias, version in versions.items()})
        if study_id != active.info.run_id:
            client.set_terminated(study_id, status=FINISHED)
    return study_id
