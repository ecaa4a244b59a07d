"""Soft labels: the teacher's raw logits for every review, computed once and keyed by review id.

The artifact ``soft_labels/logits.parquet`` of a soft-labels run has the columns ``id``, ``split``,
``logit_0``, ``logit_1`` and carries its fingerprint (teacher run, data content hash, max_len,
truncation) in the parquet metadata and in ``soft_labels/fingerprint.json``. Students read logits from
it and never recompute teacher outputs; a fingerprint that does not match the data a student loaded
is an error.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from kd_imdb import export, teacher, tracking
from kd_imdb.data import load_data
from kd_imdb.metrics import classification_metrics
from kd_imdb.teacher import POOLINGS

log = logging.getLogger(__name__)

ARTIFACT = "soft_labels/logits.parquet"
META_KEY = b"kd_imdb.fingerprint"
COLUMNS = ("id", "logit_0", "logit_1")


class SoftLabelsError(ValueError):
    """Soft labels that are missing, malformed, stale or made for other data."""


@dataclass
class SoftLabelsConfig:
    """Parameters of the ``soft_labels`` entry point."""

    teacher_run_id: str = ""
    data: str = "sample"
    unsupervised: bool = False
    batch_size: int = 64
    onnx_int8: bool = False
    logits_file: str = ""  # register this existing file instead of running the teacher
    chunk_size: int = 4096  # reviews per cached chunk: a killed labelling resumes chunk by chunk
    cache_dir: str = "checkpoints"
    stride: int = 0  # > 0: score every max_len-token window, one every `stride` tokens (whole reviews)
    pooling: str = "auto"  # how window logits make a review's: mean, ends, max, or auto (best on validation)

    def __post_init__(self) -> None:
        if not self.teacher_run_id and not self.logits_file:
            raise ValueError("give teacher_run_id (to run the teacher) or logits_file (to register logits)")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be >= 1")
        if self.stride < 0:
            raise ValueError(f"stride must be >= 0 (0 = one head+tail window per review), got {self.stride}")
        if self.pooling not in ("auto", *POOLINGS):
            raise ValueError(f"pooling must be auto or one of {', '.join(POOLINGS)}, got {self.pooling!r}")


def write_logits(frame: pd.DataFrame, fingerprint: dict, path: str | Path) -> None:
    """Write ``frame`` (id, split, logit_0, logit_1) with ``fingerprint`` in the parquet metadata."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    meta = {**(table.schema.metadata or {}), META_KEY: json.dumps(fingerprint, sort_keys=True).encode()}
    pq.write_table(table.replace_schema_metadata(meta), str(path), compression="zstd")


def read_logits(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a logits file and its fingerprint (empty when the file carries none)."""
    path = Path(path)
    if not path.exists():
        raise SoftLabelsError(f"{path}: logits file not found")
    try:
        table = pq.read_table(str(path))
    except Exception as exc:
        raise SoftLabelsError(f"{path}: not a readable parquet logits file ({exc})") from exc
    frame = table.to_pandas()
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SoftLabelsError(
            f"{path}: missing column(s) {', '.join(missing)}; a logits file needs id, logit_0, logit_1"
        )
    try:
        values = frame[["logit_0", "logit_1"]].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SoftLabelsError(f"{path}: non-numeric logits ({exc}); logit_0 and logit_1 must be numbers") from exc
    if not np.isfinite(values).all():
        raise SoftLabelsError(f"{path}: non-finite logits; recompute the soft labels")
    repeated = frame[frame["id"].duplicated(keep=False)].groupby("id")[["logit_0", "logit_1"]].nunique()
    conflicting = repeated[(repeated > 1).any(axis=1)].index
    if len(conflicting):
        raise SoftLabelsError(f"{path}: {len(conflicting)} review id(s) appear twice with different logits (e.g. "
                              f"{conflicting[0]!r}); keep one row per id")
    meta = (table.schema.metadata or {}).get(META_KEY)
    return frame, (json.loads(meta) if meta else {})


def load_for_data(run_id: str, data) -> pd.DataFrame:
    """The soft labels of run ``run_id`` as logits [n, 2] aligned with ``data.frame`` (NaN where absent).

    Checks the fingerprint against the data actually loaded: soft labels made for other data (another
    sample, another version of the data set) are an error, not a silent partial join.
    """
    frame, fingerprint = read_logits(tracking.download_artifact(run_id, ARTIFACT))
    if fingerprint.get("data_hash") != data.content_hash:
        raise SoftLabelsError(
            f"soft labels of run {run_id} were made for data {fingerprint.get('data_hash')} but the loaded data "
            f"is {data.content_hash}; pass the same --data as the soft_labels run or relabel this data"
        )
    tracking.check_validation_split(run_id, data.split("validation")["id"], "soft-labels")
    logits = frame.drop_duplicates("id").set_index("id")[["logit_0", "logit_1"]]
    aligned = logits.reindex(data.frame["id"])
    labelled = (data.frame["split"] != "unsupervised").to_numpy()
    if aligned[labelled].isna().any().any():
        raise SoftLabelsError(f"soft labels of run {run_id} miss some train/validation/test reviews; relabel this data")
    return aligned.set_index(data.frame.index)


def _check_coverage(frame: pd.DataFrame, data, where: str) -> None:
    have = set(frame["id"])
    for split in ("train", "validation", "test", "unsupervised"):
        ids = data.split(split)["id"]
        missing = int((~ids.isin(have)).sum())
        if missing:
            raise SoftLabelsError(
                f"{where}: no logits for {missing} of {len(ids)} {split} reviews; the file was made for other data"
            )


# Validation and test first: a killed labelling has the teacher's scores before the long transfer set.
SPLIT_ORDER = {"validation": 0, "test": 1, "train": 2, "unsupervised": 3}


def _read_chunk(file: Path, ids: list) -> pd.DataFrame | None:
    """A cached chunk, or None when it is absent, torn (a crash mid-write) or made for other reviews."""
    if not file.exists():
        return None
    try:
        part = pd.read_parquet(file)
    except Exception as exc:  # a torn file from before writes were atomic
        log.warning("cached chunk %s is unreadable (%s); recomputing it", file, exc)
        return None
    if part["id"].drop_duplicates().tolist() != ids:
        log.warning("cached chunk %s holds other reviews; recomputing it", file)
        return None
    return part


def _write_chunk(part: pd.DataFrame, file: Path) -> None:
    """Write to a temporary file, then rename: a crash leaves the old chunk or none, never half of one."""
    tmp = file.with_suffix(".tmp")
    part.to_parquet(tmp, index=False)
    tmp.replace(file)


def label(cfg: SoftLabelsConfig, data, teacher_run_id: str) -> tuple[pd.DataFrame, dict, dict]:
    """Run the teacher of ``teacher_run_id`` on every review of ``data`` that it has not scored yet.

    One view per review (``stride`` 0): the teacher's own truncation; validation and test logits the
    teacher run already logged (``predictions/``) are reused. Windowed (``stride`` > 0): every window of
    every review is scored (the windows of many reviews batched together, length-sorted) and pooled into
    the review's logits, the pooling chosen on validation accuracy unless ``pooling`` names one.
    Work is done in chunks cached under ``cache_dir`` so a killed job resumes. Returns (logits frame,
    fingerprint, metrics).
    """
    # Its logits on validation reviews must not be of reviews it trained on.
    tracking.check_validation_split(teacher_run_id, data.split("validation")["id"], "teacher")
    params = MlflowClient().get_run(teacher_run_id).data.params
    max_len, truncation = int(float(params.get("max_len", 128))), params.get("truncation", "head+tail")
    windowed = cfg.stride > 0
    fingerprint = {"teacher_run_id": teacher_run_id, "data_hash": data.content_hash,
                   "max_len": max_len, "truncation": f"windows/{cfg.stride}" if windowed else truncation,
                   "onnx_int8": cfg.onnx_int8}
    model_dir = tracking.download_artifact(teacher_run_id, "model")
    tok = teacher.load_tokenizer(str(model_dir))
    model = teacher.load_model(str(model_dir))

    def views(texts: list[str]) -> tuple[list[list[int]], np.ndarray]:  # token ids per view, review of each view
        if windowed:
            return teacher.encode_windows(tok, texts, max_len, cfg.stride)
        return teacher.encode(tok, texts, max_len, truncation), np.arange(len(texts))

    known = pd.DataFrame(columns=["id", "logit_0", "logit_1"])
    if not windowed:  # the teacher run scored validation and test with its own (head+tail) view
        try:
            known = pd.read_parquet(tracking.download_artifact(teacher_run_id, "predictions/predictions.parquet"))
        except tracking.TrackingError:
            log.info("teacher run has no predictions artifact; labelling every review")
    todo = data.frame.drop_duplicates("id")
    todo = todo[~todo["id"].isin(set(known["id"]))]
    todo = todo.sort_values("split", key=lambda s: s.map(SPLIT_ORDER), kind="stable").reset_index(drop=True)
    metrics: dict = {"reused_reviews": float(data.frame["id"].nunique() - len(todo))}  # unique reviews

    if cfg.onnx_int8:
        recipe = fingerprint["int8_recipe"] = "channel"
        onnx_path = Path(cfg.cache_dir) / f"soft_labels-{teacher_run_id}" / f"teacher-int8-{recipe}.onnx"
        predictor = export.OnnxTeacher(export.export_teacher_int8(model, onnx_path, recipe), tok.pad_token_id)
        probe = data.split("validation").head(512)
        probe_ids, probe_owner = views(probe["text"].tolist())
        t0 = time.time()
        fp32 = teacher.predict_logits(model, probe_ids, tok.pad_token_id, cfg.batch_size, desc="fp32 probe")
        t1 = time.time()
        int8 = predictor.predict(probe_ids, cfg.batch_size, desc="int8 probe")
        t2 = time.time()
        metrics.update(export.agreement(fp32, int8))  # per view: what the int8 model computes
        metrics["probe_fp32_views_per_s"] = len(probe_ids) / (t1 - t0)
        metrics["probe_int8_views_per_s"] = len(probe_ids) / (t2 - t1)
        if windowed:  # per review, after pooling: what the students see
            pooled = export.agreement(teacher.pool_windows(fp32, probe_owner, len(probe), "mean"),
                                      teacher.pool_windows(int8, probe_owner, len(probe), "mean"))
            metrics["int8_review_top1_agreement"] = pooled["int8_top1_agreement"]
        predict = lambda ids, desc: predictor.predict(ids, cfg.batch_size, desc=desc)  # noqa: E731
    else:
        predict = lambda ids, desc: teacher.predict_logits(model, ids, tok.pad_token_id, cfg.batch_size, desc=desc)  # noqa: E731

    kind = ("int8" if cfg.onnx_int8 else "fp32") + (f"-w{cfg.stride}" if windowed else "")
    cache = Path(cfg.cache_dir) / f"soft_labels-{teacher_run_id}-{data.content_hash}-{kind}"
    cache.mkdir(parents=True, exist_ok=True)
    t0, computed, n_views, reused = time.time(), 0, 0, 0
    parts = [known[["id", "logit_0", "logit_1"]]]  # one row per view: a review has several when windowed
    n_chunks = (len(todo) + cfg.chunk_size - 1) // cfg.chunk_size
    for c in range(n_chunks):
        chunk = todo.iloc[c * cfg.chunk_size:(c + 1) * cfg.chunk_size]
        file = cache / f"chunk-{c:05d}-{len(chunk)}.parquet"
        part = _read_chunk(file, chunk["id"].tolist())
        if part is None:
            ids, owner = views(chunk["text"].tolist())
            logits = predict(ids, f"label chunk {c + 1}/{n_chunks}")  # [views, 2]
            part = pd.DataFrame({"id": chunk["id"].to_numpy()[owner], "logit_0": logits[:, 0], "logit_1": logits[:, 1]})
            _write_chunk(part, file)
            computed, n_views = computed + len(chunk), n_views + len(ids)
        else:
            reused += 1
        parts.append(part)
    metrics["label_chunks"], metrics["label_chunks_from_cache"] = n_chunks, reused
    if reused:
        log.info("%d of %d chunks came from the cache in %s", reused, n_chunks, cache)
    if computed:
        metrics["label_reviews_per_s"] = computed / (time.time() - t0)
        metrics["label_views_per_s"] = n_views / (time.time() - t0)
    views_frame = pd.concat(parts, ignore_index=True)
    if windowed:
        logits, pooling = _pool(views_frame, data, cfg.pooling, metrics)
        fingerprint["pooling"] = pooling
    else:
        logits = views_frame.drop_duplicates("id").set_index("id")
    frame = data.frame[["id", "split"]].drop_duplicates("id").join(logits, on="id")
    return frame.reset_index(drop=True), fingerprint, metrics


def _pool(views: pd.DataFrame, data, pooling: str, metrics: dict) -> tuple[pd.DataFrame, str]:
    """Review logits from window logits (rows of one review adjacent), by ``pooling`` or, for ``auto``, by
    the pooling with the best validation accuracy; every pooling's validation accuracy goes to ``metrics``."""
    codes, ids = pd.factorize(views["id"])  # review index per window, in order of first appearance
    window_logits = views[["logit_0", "logit_1"]].to_numpy(np.float32)
    metrics["windows_per_review"] = len(views) / len(ids)
    val = data.split("validation").drop_duplicates("id")
    pooled = {}
    for how in teacher.POOLINGS:
        pooled[how] = pd.DataFrame(teacher.pool_windows(window_logits, codes, len(ids), how),
                                   index=pd.Index(ids, name="id"), columns=["logit_0", "logit_1"])
        val_logits = pooled[how].loc[val["id"]].to_numpy()
        metrics[f"val_accuracy_pool_{how}"] = float((val_logits.argmax(1) == val["label"].to_numpy()).mean())
    chosen = pooling if pooling != "auto" else max(teacher.POOLINGS, key=lambda h: metrics[f"val_accuracy_pool_{h}"])
    log.info("windowed teacher: validation accuracy by pooling %s; using %s",
             {h: round(metrics[f"val_accuracy_pool_{h}"], 4) for h in teacher.POOLINGS}, chosen)
    return pooled[chosen], chosen


def run(cfg: SoftLabelsConfig) -> str:
    """The ``soft_labels`` entry point: label (or register) and log the logits artifact and its metrics."""
    tracking.setup_tracking(tracking.EXPERIMENT)
    if not cfg.logits_file:
        tracking.require_run(cfg.teacher_run_id, "teacher")
    data = load_data(cfg.data, unsupervised=cfg.unsupervised)
    with tracking.start_run(run_name="soft_labels", tags={"kd_imdb.stage": "soft_labels"}, system_metrics=True) as run:
        tracking.log_params_once({**asdict(cfg), "data_hash": data.content_hash})
        if cfg.logits_file:
            frame, fingerprint = read_logits(cfg.logits_file)
            if fingerprint and fingerprint.get("data_hash") != data.content_hash:
                raise SoftLabelsError(
                    f"{cfg.logits_file}: made for data {fingerprint.get('data_hash')}, but {cfg.data} is "
                    f"{data.content_hash}; register it against the data it was made for"
                )
            _check_coverage(frame, data, cfg.logits_file)
            fingerprint = fingerprint or {"teacher_run_id": "external", "data_hash": data.content_hash}
            fingerprint["registered_from"] = str(cfg.logits_file)
            frame = data.frame[["id", "split"]].drop_duplicates("id").join(
                frame.drop_duplicates("id").set_index("id")[["logit_0", "logit_1"]], on="id")
            metrics: dict = {}
        else:
            frame, fingerprint, metrics = label(cfg, data, cfg.teacher_run_id)
        log_soft_labels(frame, fingerprint, data, metrics)
        return run.info.run_id


def log_soft_labels(frame: pd.DataFrame, fingerprint: dict, data, metrics: dict | None = None) -> None:
    """Log ``frame`` (id, split, logit_0, logit_1) as the soft-labels artifact of the active run, with its
    fingerprint, and the teacher's scores on each labelled split (from the very logits students see).
    Every kind of teacher (transformer, linear, ensemble) ends here, so students read one schema."""
    metrics = dict(metrics or {})
    joined = data.frame.join(frame.set_index("id")[["logit_0", "logit_1"]], on="id")
    for split, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        part = joined[joined["split"] == split]
        for k, v in classification_metrics(part[["logit_0", "logit_1"]].to_numpy(), part["label"].to_numpy()).items():
            metrics[f"teacher_{prefix}_{k}"] = v
    metrics["reviews"] = float(len(frame))
    mlflow.log_metrics(metrics)
    mlflow.set_tags({f"fingerprint.{k}": str(v) for k, v in fingerprint.items()})
    tracking.log_validation_split(data.split("validation")["id"])
    tracking.log_datasets(data.source, {split: data.split(split)["id"].tolist() for split, n in data.counts().items() if n},
                          data.content_hash)
    with tempfile.TemporaryDirectory() as tmp:
        write_logits(frame, fingerprint, f"{tmp}/logits.parquet")
        Path(f"{tmp}/fingerprint.json").write_text(json.dumps(fingerprint, indent=2, sort_keys=True))
        mlflow.log_artifacts(tmp, "soft_labels")
