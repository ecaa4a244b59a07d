"""IMDB data: load any source into one frame, validate it, carve the validation split.

Every source ends as a pandas frame with columns ``id``, ``text``, ``label``, ``split``:

* ``id`` is the first 16 hex digits of SHA-256 of the review's UTF-8 text, so ids agree across
  sources (hub, parquet, the aclImdb archive, a CSV) and teacher logits join to any copy of the data;
* ``split`` is one of ``train``, ``validation``, ``test``, ``unsupervised``. The validation split is a
  seeded, stratified slice of train; it drives every model selection and early stop. Test is only
  read for final reporting.

Sources (the ``data`` parameter of every entry point):

* ``sample``: the small real sample shipped in the package (``kd_imdb/sample``), the embedded default;
* a folder with ``{train,test,unsupervised}.parquet`` (the layout of ``../shared/data/imdb``);
* an ``aclImdb/`` folder as the original archive unpacks (``train/pos/*.txt`` ...);
* one CSV/JSONL/parquet file with ``text`` and ``label`` and, optionally, ``split``;
* anything else is taken as a Hugging Face hub id (e.g. ``stanfordnlp/imdb``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SAMPLE_PATH = Path(__file__).parent / "sample" / "imdb_sample.parquet"
SPLITS = ("train", "validation", "test", "unsupervised")
FILE_SUFFIXES = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


def review_id(text: str) -> str:
    """The review's id: the first 16 hex digits of SHA-256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def ids_hash(ids) -> str:
    """SHA-256 over the sorted review ids (first 16 hex digits): names a split whatever its row order."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


@dataclass
class ImdbData:
    """All splits of one data source in one frame (columns id, text, label, split)."""

    frame: pd.DataFrame
    source: str

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name].reset_index(drop=True)

    @property
    def validation_hash(self) -> str:
        """The validation split's ``ids_hash``: equal on every stage that carved the same split."""
        return ids_hash(self.split("validation")["id"])

    @property
    def content_hash(self) -> str:
        """SHA-256 over the sorted (id, label) pairs of the labelled reviews (train+validation+test).

        The validation carve-out does not change it (it is a slice of train), so one soft-labels file
        serves every validation fraction and seed; the unlabelled reviews are left out so that a
        run with or without them sees the same data.
        """
        labelled = self.frame[self.frame["split"] != "unsupervised"]
        pairs = sorted(zip(labelled["id"], labelled["label"].astype(int)))
        digest = hashlib.sha256()
        for rid, label in pairs:
            digest.update(f"{rid}:{label}\n".encode())
        return digest.hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        return {s: int((self.frame["split"] == s).sum()) for s in SPLITS}


def load_data(
    source: str = "sample",
    val_fraction: float = 0.1,
    seed: int = 0,
    unsupervised: bool = False,
) -> ImdbData:
    """Load ``source`` (see the module docstring), validate it and carve the validation split.

    The validation split is drawn from train with ``sklearn.model_selection.train_test_split``,
    stratified on the label and seeded by ``seed``, so the same seed gives the same split anywhere.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    raw, where = _read_source(source)
    frame = _validate(raw, where)
    if not unsupervised:
        frame = frame[frame["split"] != "unsupervised"]
    frame = _carve_validation(frame, val_fraction, seed)
    data = ImdbData(frame=frame.reset_index(drop=True), source=str(source))
    log.info("loaded %s: %s", where, data.counts())
    return data


def load_labelled(source: str = "sample", split: str = "test") -> pd.DataFrame:
    """The labelled reviews of ``source`` to evaluate a model on (columns id, text, label): the rows of
    ``split`` (``all``: every labelled row). A file without a split column is read whole, with no
    held-out part, so a user's own labelled file is scored in full."""
    raw, where = _read_source(source, hold_out=False)
    _require_columns(raw, where)
    splits = raw["split"].astype(str) if "split" in raw.columns else pd.Series("all", index=raw.index)
    frame = raw[(splits != "unsupervised") & ((split == "all") | (splits == split) | (splits == "all"))]
    if frame.empty:
        found = ", ".join(sorted(set(splits) - {"unsupervised"})) or "none"
        raise DataError(f"{where}: no labelled reviews in split {split!r} (labelled splits: {found}); "
                        "pass --split with one of them, or all")
    frame = frame[["text", "label"]].reset_index(drop=True)
    _check_texts(frame, where)
    _check_not_empty(frame, where)
    _check_labels(frame, where)
    return frame.assign(id=frame["text"].map(review_id), label=frame["label"].astype(int))[["id", "text", "label"]]


def _read_source(source: str, hold_out: bool = True) -> tuple[pd.DataFrame, str]:
    """Read ``source`` into a frame with text, label and split (unvalidated); ``hold_out``: see _read_file."""
    if source in ("sample", "", None):
        return _read_file(SAMPLE_PATH), str(SAMPLE_PATH)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "train" / "pos").is_dir() or (path / "aclImdb").is_dir():
            return _read_aclimdb(path), str(path)
        return _read_parquet_folder(path), str(path)
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.exists():
            raise DataError(f"{path}: file not found; pass an existing file, folder or hub id as data")
        return _read_file(path, hold_out), str(path)
    if path.exists():
        raise DataError(f"{path}: unsupported file type; use .csv, .jsonl or .parquet")
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise DataError(f"{source}: no such file or folder; pass an existing path or a hub id")
    return _read_hub(source), f"hub:{source}"


def _read_file(path: Path, hold_out: bool = True) -> pd.DataFrame:
    """One CSV/JSONL/parquet file. Without a ``split`` column all rows are train and (``hold_out``) a
    seeded 20% is held out as test (stratified), so a single labelled file still gives a final report."""
    import datasets

    kind = FILE_SUFFIXES[path.suffix.lower()]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (it has no rows); write a header and reviews, or pass another file")
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
        frame = ds.to_pandas()
    except Exception as exc:  # datasets wraps the parser's error (pandas, pyarrow) in its own types
        # Only a file that failed is read again, to name what is wrong with it in the user's terms.
        if path.suffix.lower() == ".jsonl":
            _check_json_lines(path)
        if kind == "csv" and _csv_has_no_rows(path):
            raise DataError(f"{path}: the file has no rows (a header alone); add reviews under the header") from exc
        root = _root_cause(exc)
        raise DataError(f"{path}: unreadable {kind} file ({type(root).__name__}: {_first_line(root)})") from exc
    if len(frame) == 0:
        raise DataError(f"{path}: the file has no rows; add reviews (a text column and a 0/1 label column)")
    _require_columns(frame, path)
    if "split" not in frame.columns and hold_out:
        from sklearn.model_selection import train_test_split

        _check_labels(frame, path)
        _check_texts(frame, path)
        by_content = np.argsort(frame["text"].map(review_id).to_numpy(), kind="stable")  # row order must not matter
        train_idx, test_idx = train_test_split(
            by_content, test_size=0.2, random_state=0, stratify=frame["label"].to_numpy()[by_content]
        )
        frame["split"] = "train"
        frame.loc[test_idx, "split"] = "test"
        log.warning("%s has no split column: holding out 20%% of it as test", path)
    return frame


def _check_json_lines(path: Path) -> None:
    """A JSON Lines file: one object per line. Names the first line that is not, and an empty file."""
    rows = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {n}: not a JSON object; write one object per line, e.g. "
                                '{"text": "...", "label": 1}')
            rows += 1
    if rows == 0:
        raise DataError(f"{path}: the file has no rows; write one JSON object per line")


def _csv_has_no_rows(path: Path) -> bool:
    try:
        return pd.read_csv(path, nrows=1).empty
    except Exception:  # unreadable: datasets' reading below names the parser's reason
        return False


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain: the parser's own reason, not the wrapper's."""
    seen = {id(exc)}
    while (exc.__cause__ or exc.__context__) is not None and id(exc.__cause__ or exc.__context__) not in seen:
        exc = exc.__cause__ or exc.__context__
        seen.add(id(exc))
    return exc


def _read_parquet_folder(path: Path) -> pd.DataFrame:
    import datasets

    files = {s: path / f"{s}.parquet" for s in ("train", "test", "unsupervised")}
    missing = [str(f) for s, f in files.items() if s != "unsupervised" and not f.exists()]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; a data folder needs train.parquet and test.parquet")
    frames = []
    for split, file in files.items():
        if not file.exists():
            continue
        try:
            part = datasets.load_dataset("parquet", data_files=str(file), split="train").to_pandas()
        except Exception as exc:
            raise DataError(f"{file}: unreadable parquet file ({_first_line(exc)})") from exc
        _require_columns(part, file)
        part = part[["text", "label"]].copy()
        part["split"] = split
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def _read_aclimdb(path: Path) -> pd.DataFrame:
    """The original archive: aclImdb/{train,test}/{pos,neg}/*.txt and train/unsup/*.txt."""
    import datasets

    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    rows: dict[str, list] = {"text": [], "label": [], "split": []}
    layout = [("train", "neg", 0), ("train", "pos", 1), ("test", "neg", 0), ("test", "pos", 1), ("train", "unsup", -1)]
    for folder, sub, label in layout:
        directory = root / folder / sub
        if not directory.is_dir():
            if sub == "unsup":
                continue
            raise DataError(f"{directory}: missing; an aclImdb folder needs train/ and test/ with pos/ and neg/")
        for file in sorted(directory.glob("*.txt")):
            rows["text"].append(file.read_text(encoding="utf-8"))
            rows["label"].append(label)
            rows["split"].append("unsupervised" if label == -1 else folder)
    # Through datasets like every other source, so features are checked the same way.
    return datasets.Dataset.from_dict(rows).to_pandas()


def _read_hub(name: str) -> pd.DataFrame:
    import datasets

    log.info("%s is not a local path: loading it from the Hugging Face hub", name)
    if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false") and not _hub_reachable():
        raise DataError(f"{name}: not a local file or folder, and the Hugging Face hub is unreachable (offline?); "
                        "pass a local folder or file, or set HF_HUB_OFFLINE=1 to use a cached copy")
    try:
        dsd = datasets.load_dataset(name)
    except Exception as exc:
        raise DataError(
            f"{name}: could not load from the Hugging Face hub ({_first_line(exc)}); "
            "offline, pass a local folder or file instead"
        ) from exc
    frames = []
    for split in ("train", "test", "unsupervised"):
        if split in dsd:
            part = dsd[split].to_pandas()
            _require_columns(part, f"hub:{name}[{split}]")
            part = part[["text", "label"]].copy()
            part["split"] = split
            frames.append(part)
    return pd.concat(frames, ignore_index=True)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub: seconds offline, where datasets' own retries take half a minute."""
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _require_columns(frame: pd.DataFrame, where) -> None:
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)} (found {', '.join(map(str, frame.columns))}); "
            "the data needs a text column and a 0/1 label column"
        )


def _check_labels(frame: pd.DataFrame, where) -> None:
    labelled = frame[frame.get("split", "train") != "unsupervised"] if "split" in frame else frame
    labels = pd.to_numeric(labelled["label"], errors="coerce")
    bad = labelled["label"][~labels.isin([0, 1])]
    if len(bad):
        raise DataError(
            f"{where}: {len(bad)} label(s) other than 0/1 (e.g. {getattr(bad.iloc[0], 'item', lambda: bad.iloc[0])()!r}); "
            "labels must be 0 or 1"
        )


def _check_texts(frame: pd.DataFrame, where) -> None:
    """Every review a string: a missing one (null, NaN) is named apart from one of another type."""
    missing = frame["text"].isna()
    if missing.any():
        raise DataError(f"{where}: {int(missing.sum())} missing review(s) (null/NaN text, first at row "
                        f"{int(np.flatnonzero(missing)[0])}); drop them or fill in their text")
    if not frame["text"].map(lambda t: isinstance(t, str)).all():
        raise DataError(f"{where}: non-text values in the text column; every review must be a string")


def _check_not_empty(frame: pd.DataFrame, where) -> None:
    """No review that is empty or whitespace only; names how many and the first row."""
    empty = frame["text"].str.strip() == ""
    if empty.any():
        raise DataError(
            f"{where}: {int(empty.sum())} empty review(s) (first at row {int(np.flatnonzero(empty)[0])}); "
            "drop them or fill in their text"
        )


def _validate(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    _require_columns(frame, where)
    frame = frame[["text", "label", "split"]].copy()
    unknown = sorted(set(frame["split"].astype(str)) - set(SPLITS))
    if unknown:
        raise DataError(f"{where}: unknown split(s) {unknown}; use train, test or unsupervised")
    _check_texts(frame, where)
    _check_not_empty(frame, where)
    _check_labels(frame, where)
    frame.loc[frame["split"] == "unsupervised", "label"] = -1
    frame["label"] = frame["label"].astype(int)
    for split in ("train", "test"):
        labels = set(frame.loc[frame["split"] == split, "label"])
        if labels != {0, 1}:
            raise DataError(f"{where}: the {split} split has labels {sorted(labels)}; it needs both 0 and 1")
    frame["id"] = frame["text"].map(review_id)
    return frame[["id", "text", "label", "split"]]


def _carve_validation(frame: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    from sklearn.model_selection import train_test_split

    frame = frame.copy()
    frame.loc[frame["split"] == "validation", "split"] = "train"  # a source's own validation is re-carved
    train_idx = np.flatnonzero(frame["split"].to_numpy() == "train")
    # Order by review id first, so the split depends on the content alone, not on row order:
    # the same reviews from any source (hub, parquet, aclImdb, a shuffled CSV) give the same split.
    train_idx = train_idx[np.argsort(frame["id"].to_numpy()[train_idx], kind="stable")]
    _, val_idx = train_test_split(
        train_idx, test_size=val_fraction, random_state=seed, stratify=frame["label"].to_numpy()[train_idx]
    )
    frame.iloc[np.sort(val_idx), frame.columns.get_loc("split")] = "validation"
    return frame


def label_budget(train: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """The first ``n`` labelled reviews of ``train`` in a seeded, per-class order: stratified (each class
    keeps its share, rounded) and nested (a smaller budget's reviews all sit inside a larger one's),
    whatever the row order, since reviews are ordered by id before the shuffle. ``n`` >= len: all."""
    if n < 2:
        raise ValueError(f"a label budget needs at least 2 reviews (one per class), got {n}")
    if n >= len(train):
        return train
    keep = []
    for label, part in train.groupby("label"):
        part = part.sort_values("id", kind="stable")
        order = np.random.default_rng([seed, int(label)]).permutation(len(part))
        keep.append(part.iloc[order[: max(1, round(n * len(part) / len(train)))]])
    return pd.concat(keep).sort_index()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
