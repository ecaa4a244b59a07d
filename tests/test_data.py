"""kd_imdb.data: review ids, the shipped sample, every local source, and bad data through the CLI."""
from __future__ import annotations

import hashlib
import shutil

import pandas as pd
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

from kd_imdb.data import SAMPLE_PATH, DataError, label_budget, load_data, review_id

NON_ASCII = "Amélie — a café, naïve señor, 映画 🎬; ÜBER“gut”"


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def content_hash_of(pairs) -> str:
    """The documented content hash, computed independently: sha256 over sorted 'id:label' lines."""
    digest = hashlib.sha256()
    for rid, label in sorted(pairs):
        digest.update(f"{rid}:{int(label)}\n".encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def raw_sample() -> pd.DataFrame:
    return pd.read_parquet(SAMPLE_PATH)


@pytest.fixture(scope="module")
def sample():
    return load_data("sample")


@pytest.fixture(scope="module")
def subset(raw_sample) -> pd.DataFrame:
    """40 labelled reviews of the sample: 10 per (split, label), plus a made-up non-ASCII review."""
    labelled = raw_sample[raw_sample["split"] != "unsupervised"]
    sub = labelled.groupby(["split", "label"], sort=True).head(10).reset_index(drop=True)
    sub = sub[["text", "label", "split"]].copy()
    sub["label"] = sub["label"].astype(int)
    sub.loc[0, "text"] = NON_ASCII + " " + sub.loc[0, "text"]  # and one review with non-ASCII text
    assert len(sub) == 40 and sub.groupby(["split", "label"]).size().eq(10).all()
    return sub


# --- review ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["A fine film.", NON_ASCII, "  padded  ", "line\nbreak"])
def test_review_id_is_sha256_prefix_of_utf8(text):
    rid = review_id(text)
    assert rid == hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    assert len(rid) == 16 and all(c in "0123456789abcdef" for c in rid)


def test_review_id_uses_utf8_not_another_encoding():
    assert review_id(NON_ASCII) != hashlib.sha256(NON_ASCII.encode("utf-16")).hexdigest()[:16]
    assert review_id("café") == "850f7dc43910ff89"
    assert review_id("café") != review_id("cafe")


# --- the shipped sample ------------------------------------------------------------------------------


def test_sample_counts_and_stratified_validation(sample):
    assert sample.counts() == {"train": 900, "validation": 100, "test": 1000, "unsupervised": 0}
    by = sample.frame.groupby("split")["label"].value_counts().to_dict()
    assert by == {("train", 0): 450, ("train", 1): 450, ("validation", 0): 50, ("validation", 1): 50,
                  ("test", 0): 500, ("test", 1): 500}
    assert list(sample.frame.columns) == ["id", "text", "label", "split"]


def test_sample_ids_are_review_ids(sample, raw_sample):
    assert (sample.frame["id"] == sample.frame["text"].map(sha16)).all()
    labelled = raw_sample[raw_sample["split"] != "unsupervised"]
    assert sorted(sample.frame["id"]) == sorted(labelled["text"].map(sha16))
    assert sample.content_hash == content_hash_of(zip(sample.frame["id"], sample.frame["label"]))


def test_same_seed_same_split_other_seed_other_split(sample):
    again = load_data("sample", seed=0)
    other = load_data("sample", seed=1)
    val = lambda d: sorted(d.split("validation")["id"])  # noqa: E731
    assert val(again) == val(sample)
    assert pd.testing.assert_frame_equal(again.frame, sample.frame) is None
    assert val(other) != val(sample)
    assert other.counts() == sample.counts()
    assert other.split("validation")["label"].value_counts().to_dict() == {0: 50, 1: 50}
    # the carve-out only moves reviews between train and validation
    tv = lambda d: sorted(d.frame.loc[d.frame["split"].isin(["train", "validation"]), "id"])  # noqa: E731
    assert tv(other) == tv(sample)
    assert sorted(other.split("test")["id"]) == sorted(sample.split("test")["id"])
    assert other.content_hash == sample.content_hash


def test_val_fraction(sample):
    data = load_data("sample", val_fraction=0.2)
    assert data.counts()["validation"] == 200 and data.counts()["train"] == 800
    assert data.content_hash == sample.content_hash
    with pytest.raises(DataError, match="val_fraction"):
        load_data("sample", val_fraction=0.0)


def test_unsupervised_only_on_request(sample, raw_sample):
    assert "unsupervised" not in set(sample.frame["split"])
    data = load_data("sample", unsupervised=True)
    assert data.counts() == {"train": 900, "validation": 100, "test": 1000, "unsupervised": 5500}
    unsup = data.split("unsupervised")
    assert set(unsup["label"]) == {-1}
    assert sorted(unsup["id"]) == sorted(raw_sample.loc[raw_sample["split"] == "unsupervised", "text"].map(sha16))
    assert data.content_hash == sample.content_hash  # unlabelled reviews do not change the hash
    assert sorted(data.split("validation")["id"]) == sorted(sample.split("validation")["id"])


# --- every local source ------------------------------------------------------------------------------


def write_source(frame: pd.DataFrame, path, kind: str) -> None:
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)


def write_aclimdb(frame: pd.DataFrame, root) -> None:
    for i, row in enumerate(frame.itertuples()):
        folder = root / row.split / ("pos" if row.label == 1 else "neg")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}_{8 if row.label else 2}.txt").write_bytes(row.text.encode("utf-8"))


def assert_same_reviews(data, subset: pd.DataFrame) -> None:
    """``data`` holds exactly the reviews of ``subset``, each under its review id with its label."""
    expected = {sha16(t): (t, int(lab)) for t, lab in zip(subset["text"], subset["label"])}
    got = {rid: (t, int(lab)) for rid, t, lab in zip(data.frame["id"], data.frame["text"], data.frame["label"])}
    assert got == expected
    assert data.content_hash == content_hash_of((rid, lab) for rid, (_, lab) in expected.items())


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_file_with_split_column(tmp_path, subset, kind):
    path = tmp_path / f"reviews.{kind}"
    write_source(subset, path, kind)
    data = load_data(str(path))
    assert_same_reviews(data, subset)
    assert data.counts() == {"train": 18, "validation": 2, "test": 20, "unsupervised": 0}
    # the file's own split is kept: its test reviews are exactly the test split
    assert sorted(data.split("test")["id"]) == sorted(subset.loc[subset["split"] == "test", "text"].map(sha16))
    assert sorted(data.split("validation")["label"]) == [0, 1]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_file_without_split_column_holds_out_test(tmp_path, subset, kind):
    path = tmp_path / f"reviews.{kind}"
    write_source(subset.drop(columns="split"), path, kind)
    data = load_data(str(path))
    assert_same_reviews(data, subset)
    assert data.counts() == {"train": 28, "validation": 4, "test": 8, "unsupervised": 0}
    assert data.split("test")["label"].value_counts().to_dict() == {0: 4, 1: 4}
    # the held-out test split is seeded: the same reviews every time
    assert sorted(load_data(str(path), seed=5).split("test")["id"]) == sorted(data.split("test")["id"])


def test_every_source_gives_the_same_ids_and_hash(tmp_path, subset, raw_sample):
    sources = {}
    for kind in ("csv", "jsonl", "parquet"):
        write_source(subset, tmp_path / f"split.{kind}", kind)
        write_source(subset.drop(columns="split"), tmp_path / f"nosplit.{kind}", kind)
        sources[f"split.{kind}"] = tmp_path / f"split.{kind}"
        sources[f"nosplit.{kind}"] = tmp_path / f"nosplit.{kind}"
    folder = tmp_path / "parquet_folder"
    folder.mkdir()
    for split in ("train", "test"):
        subset[subset["split"] == split][["text", "label"]].to_parquet(folder / f"{split}.parquet", index=False)
    unsup = raw_sample[raw_sample["split"] == "unsupervised"].head(5)[["text", "label"]]
    unsup.to_parquet(folder / "unsupervised.parquet", index=False)
    sources["folder"] = folder
    write_aclimdb(subset, tmp_path / "acl")
    sources["aclImdb"] = tmp_path / "acl"
    write_aclimdb(subset, tmp_path / "nested" / "aclImdb")
    sources["parent of aclImdb"] = tmp_path / "nested"

    loaded = {name: load_data(str(path)) for name, path in sources.items()}
    reference = loaded["split.parquet"]
    for name, data in loaded.items():
        assert_same_reviews(data, subset)
        assert data.content_hash == reference.content_hash, name
    non_ascii_id = sha16(subset.loc[0, "text"])
    for name, data in loaded.items():
        row = data.frame[data.frame["id"] == non_ascii_id]
        assert row["text"].tolist() == [subset.loc[0, "text"]], name
        assert row["label"].tolist() == [int(subset.loc[0, "label"])], name
    # sources that keep the original split agree on the test split exactly, and on the validation split
    # when the rows come in the same order (see test_validation_split_ignores_row_order)
    for name in ("split.csv", "split.jsonl", "folder", "aclImdb", "parent of aclImdb"):
        assert sorted(loaded[name].split("test")["id"]) == sorted(reference.split("test")["id"]), name
    for name in ("split.csv", "split.jsonl"):
        assert sorted(loaded[name].split("validation")["id"]) == sorted(reference.split("validation")["id"]), name
    # the folder's unsupervised.parquet only comes in on request and does not change the hash
    with_unsup = load_data(str(folder), unsupervised=True)
    assert sorted(with_unsup.split("unsupervised")["id"]) == sorted(unsup["text"].map(sha16))
    assert with_unsup.content_hash == reference.content_hash
    # a different content gives a different hash
    flipped = subset.copy()
    flipped.loc[0, "label"] = 1
    write_source(flipped, tmp_path / "flipped.parquet", "parquet")
    assert load_data(str(tmp_path / "flipped.parquet")).content_hash != reference.content_hash


def test_validation_split_ignores_row_order(tmp_path, subset):
    """'The same seed gives the same split anywhere': the same reviews in another order (another source,
    a shuffled copy) should give the same validation reviews."""
    write_source(subset, tmp_path / "a.parquet", "parquet")
    write_source(subset.sample(frac=1.0, random_state=1), tmp_path / "b.parquet", "parquet")
    a, b = load_data(str(tmp_path / "a.parquet")), load_data(str(tmp_path / "b.parquet"))
    assert a.content_hash == b.content_hash
    assert sorted(a.split("validation")["id"]) == sorted(b.split("validation")["id"])


def test_a_bare_word_tries_the_hub_and_fails_fast_offline(monkeypatch):
    import time

    from kd_imdb.data import _hub_reachable

    if _hub_reachable():
        pytest.skip("the hub is reachable from this machine")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="not a local file or folder, and the Hugging Face hub is unreachable"):
        load_data("no-such-dataset-xyz")
    assert time.perf_counter() - t0 < 10  # datasets' own retries took 34 s


def test_parquet_folder_needs_train_and_test(tmp_path, subset):
    subset[["text", "label"]].to_parquet(tmp_path / "train.parquet", index=False)
    with pytest.raises(DataError, match="test.parquet"):
        load_data(str(tmp_path))


# --- bad data through the CLI ------------------------------------------------------------------------


def bad_missing_label(tmp_path, subset):
    path = tmp_path / "no_label.csv"
    subset.rename(columns={"label": "sentiment"}).to_csv(path, index=False)
    return path, ["missing column", "label", "sentiment"]


def bad_label_two(tmp_path, subset):
    path = tmp_path / "label_two.csv"
    frame = subset.drop(columns="split")
    frame.loc[7, "label"] = 2
    frame.to_csv(path, index=False)
    return path, ["1 label(s) other than 0/1", "2", "labels must be 0 or 1"]


def bad_empty_text(tmp_path, subset):
    path = tmp_path / "empty_text.jsonl"
    frame = subset.copy()
    frame.loc[13, "text"] = "  \t "
    frame.to_json(path, orient="records", lines=True)
    return path, ["1 empty review(s)", "row 13"]


def bad_corrupt_parquet(tmp_path, subset):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"PAR1 this is not really a parquet file \x00\xff\x13" * 20)
    return path, ["unreadable parquet file"]


def bad_missing_text(tmp_path, subset):
    path = tmp_path / "missing_text.parquet"
    frame = subset.copy()
    frame.loc[4, "text"] = None
    frame.to_parquet(path, index=False)
    return path, ["1 missing review(s)", "null/NaN", "row 4"]


def bad_jsonl_line(tmp_path, subset):
    path = tmp_path / "bad_line.jsonl"
    subset.head(5).to_json(path, orient="records", lines=True)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]  # a record cut short
    path.write_text("\n".join(lines) + "\n")
    return path, ["line 3: not valid JSON"]


def bad_empty_jsonl(tmp_path, subset):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    return path, ["has no rows"]


def bad_zero_row_csv(tmp_path, subset):
    path = tmp_path / "header_only.csv"
    path.write_text("text,label,split\n")
    return path, ["has no rows"]


def bad_empty_file(tmp_path, subset):
    path = tmp_path / "zero_bytes.csv"
    path.write_bytes(b"")
    return path, ["the file is empty"]


def bad_csv_quotes(tmp_path, subset):
    path = tmp_path / "bad_quotes.csv"
    path.write_text('text,label\n"fine film",1\n"unclosed quote,0\n')
    return path, ["unreadable csv file", "ParserError"]


def bad_missing_file(tmp_path, subset):
    return tmp_path / "does_not_exist.parquet", ["file not found"]


def bad_missing_folder(tmp_path, subset):
    return tmp_path / "no_such_folder", ["no such file or folder"]


def test_missing_folder_and_unsupported_file(tmp_path, subset):
    path, words = bad_missing_folder(tmp_path, subset)
    with pytest.raises(DataError, match=words[0]):
        load_data(str(path))
    (tmp_path / "reviews.txt").write_text("text,label\nfine,1\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_data(str(tmp_path / "reviews.txt"))


@pytest.mark.parametrize("make", [bad_missing_label, bad_label_two, bad_empty_text, bad_corrupt_parquet,
                                  bad_missing_file, bad_missing_text, bad_jsonl_line, bad_empty_jsonl,
                                  bad_zero_row_csv, bad_empty_file, bad_csv_quotes], ids=lambda f: f.__name__[4:])
def test_bad_data_is_one_line_exit_2(tmp_path, subset, db_template, make):
    path, words = make(tmp_path, subset)
    with pytest.raises(DataError):  # the same problem in-process is a DataError (CLI: exit 2)
        load_data(str(path))
    shutil.copy(db_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run_cli("student", "--mode", "scratch", "--data", str(path), "--epochs", "1",
                   cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0]  # the message is the last thing said
    assert "Traceback" not in proc.stderr
    assert str(path) in errors[0]
    for word in words:
        assert word in errors[0], errors[0]
    assert proc.stdout == ""
    # The data is loaded before any run starts, so a data error leaves no run behind: in particular no
    # run stuck in RUNNING, and no student artifacts. (An error inside a run, e.g. a logits file that
    # does not cover the data, ends that run FAILED: tests/test_soft_labels.py.)
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []
    assert not (tmp_path / "mlruns").exists() or not any((tmp_path / "mlruns").rglob("model.safetensors"))


def test_label_budgets_are_stratified_nested_and_independent_of_row_order(sample):
    train = sample.split("train")
    budgets = {n: label_budget(train, n) for n in (50, 200, 400)}
    for n, part in budgets.items():
        assert len(part) == n and abs(part["label"].mean() - train["label"].mean()) < 0.01  # each class its share
    assert set(budgets[50]["id"]) < set(budgets[200]["id"]) < set(budgets[400]["id"])  # nested
    shuffled = label_budget(train.sample(frac=1, random_state=3), 200)
    assert set(shuffled["id"]) == set(budgets[200]["id"])  # rows in another order: the same reviews
    assert set(label_budget(train, 200, seed=1)["id"]) != set(budgets[200]["id"])  # another seed: others
    assert label_budget(train, 10**6) is train
    with pytest.raises(ValueError, match="at least 2"):
        label_budget(train, 1)


def test_a_label_budget_shrinks_train_only():
    from kd_imdb.config import ArmConfig
    from kd_imdb.experiment import prepare

    _, _, full = prepare(ArmConfig.from_flat(mode="scratch", vocab_size=500))
    _, _, small = prepare(ArmConfig.from_flat(mode="scratch", vocab_size=500, label_budget=100))
    assert len(small["train"].labels) == 100 and len(full["train"].labels) == 900
    assert set(small["train"].ids) < set(full["train"].ids)
    for split in ("validation", "test"):
        assert list(small[split].ids) == list(full[split].ids)
    with pytest.raises(ValueError, match="label_budget"):
        ArmConfig.from_flat(mode="scratch", label_budget=1)
