"""The study on a real mlflow server: the run tree, statistics outputs and the registry (kills: test_faults.py)."""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import BIN, ROOT, run_cli
from mlflow.tracking import MlflowClient

from kd_imdb.config import StudyConfig
from kd_imdb.study import study_name

pytestmark = pytest.mark.slow  # trains models or serves them for tens of seconds: -m 'not slow' skips

SMALL = ["--epochs", "1", "--max-len", "48", "--vocab-size", "1500", "--embedding-dim", "16"]


@pytest.fixture(scope="module")
def server_env(mlflow_server):
    return {"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_EXPERIMENT_NAME": "study-tests"}


@pytest.fixture(scope="module")
def soft_labels_run(server_env, tmp_path_factory):
    return register_synthetic_soft_labels(server_env, tmp_path_factory.mktemp("labels"))


def register_synthetic_soft_labels(env: dict, tmp) -> str:
    """Soft labels for the shipped sample, registered from a logits file (no teacher needed)."""
    from kd_imdb.data import load_data
    from kd_imdb.soft_labels import write_logits

    data = load_data("sample")
    rng = np.random.default_rng(0)
    # A noisy teacher that is right about 85% of the time, with graded confidence.
    margin = (2 * data.frame["label"].clip(lower=0).to_numpy() - 1) * rng.gamma(2.0, 1.0, len(data.frame))
    margin[rng.random(len(margin)) < 0.15] *= -1
    frame = pd.DataFrame({"id": data.frame["id"], "logit_0": -margin / 2, "logit_1": margin / 2})
    frame = frame.drop_duplicates("id")  # one row per review: the sample's duplicate texts share an id
    write_logits(frame, {"teacher_run_id": "synthetic", "data_hash": data.content_hash}, tmp / "logits.parquet")
    proc = run_cli("soft-labels", "--logits-file", str(tmp / "logits.parquet"), env=env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().split()[-1]


def runs_under(client, experiment_id, parent_id):
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


def finished_cells(client, experiment_id, study_id) -> Counter:
    cells = Counter()
    for config in runs_under(client, experiment_id, study_id):
        for pair in runs_under(client, experiment_id, config.info.run_id):
            for arm in runs_under(client, experiment_id, pair.info.run_id):
                if arm.info.status == "FINISHED":
                    cells[(config.data.tags["kd_imdb.config"], pair.data.tags["kd_imdb.seed"], arm.data.tags["kd_imdb.arm"])] += 1
    return cells


@pytest.fixture(scope="module")
def study(server_env, soft_labels_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    proc = run_cli("study", "--soft-labels-run-id", soft_labels_run, "--grid", "gru:8;cnn:8", "--seeds", "2",
                   "--workers", "2", *SMALL, env=server_env, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study_id = proc.stdout.strip().split()[-1]
    client = MlflowClient(server_env["MLFLOW_TRACKING_URI"])
    return {"id": study_id, "client": client, "tmp": tmp, "stdout": proc.stdout, "soft_labels_run": soft_labels_run,
            "experiment_id": client.get_run(study_id).info.experiment_id}


def test_study_tree_pairs_share_initial_weights(study, server_env):
    mlflow.set_tracking_uri(server_env["MLFLOW_TRACKING_URI"])
    client, exp = study["client"], study["experiment_id"]
    configs = runs_under(client, exp, study["id"])
    assert sorted(c.data.tags["kd_imdb.config"] for c in configs) == ["cnn-8", "gru-8"]
    for config in configs:
        pairs = runs_under(client, exp, config.info.run_id)
        config_name = config.data.tags["kd_imdb.config"]
        assert sorted(p.data.tags["kd_imdb.seed"] for p in pairs) == ["0", "1"]
        for pair in pairs:
            arms = {a.data.tags["kd_imdb.arm"]: a for a in runs_under(client, exp, pair.info.run_id)}
            assert set(arms) == {"scratch", "kd"}
            assert arms["scratch"].data.tags["init_sha256"] == arms["kd"].data.tags["init_sha256"]
            config = mlflow.artifacts.load_dict(f"runs:/{arms['kd'].info.run_id}/config.json")
            assert (config["mode"], config["arch"], config["hidden"], config["epochs"]) == ("kd", config_name[:3], 8, 1)
            assert config["seed"] == int(pair.data.tags["kd_imdb.seed"]) and config["max_len"] == 48
            assert pair.data.metrics["kd_minus_scratch_test_accuracy"] == pytest.approx(
                arms["kd"].data.metrics["test_accuracy"] - arms["scratch"].data.metrics["test_accuracy"])
    seeds = {p.data.tags["kd_imdb.seed"]: p for c in configs for p in runs_under(client, exp, c.info.run_id)
             if c.data.tags["kd_imdb.config"] == "gru-8"}
    inits = [runs_under(client, exp, seeds[s].info.run_id)[0].data.tags["init_sha256"] for s in ("0", "1")]
    assert inits[0] != inits[1]  # another seed, other weights


def test_runs_are_named_and_tagged_for_the_ui(study):
    client, exp, study_id = study["client"], study["experiment_id"], study["id"]
    assert client.get_run(study_id).info.run_name == "study gru8/cnn8 x2"
    # the search box filters a study's arms by its tag
    arms = client.search_runs([exp], f"tags.`kd_imdb.study` = '{study_id}' and tags.`kd_imdb.stage` = 'student'")
    assert len(arms) == 8
    names = sorted(a.info.run_name for a in arms)
    assert names[:4] == ["cnn-8 s0 kd", "cnn-8 s0 scratch", "cnn-8 s1 kd", "cnn-8 s1 scratch"]
    for arm in arms:
        tags = arm.data.tags
        assert arm.info.run_name == f"{tags['kd_imdb.config']} s{tags['kd_imdb.seed']} {tags['kd_imdb.arm']}"
        assert tags["kd_imdb.soft_labels_run_id"] == study["soft_labels_run"]
    pairs = client.search_runs([exp], f"tags.`kd_imdb.study` = '{study_id}' and tags.`kd_imdb.stage` = 'student_pair'")
    assert sorted(p.info.run_name for p in pairs) == ["cnn-8 s0", "cnn-8 s1", "gru-8 s0", "gru-8 s1"]
    for pair in pairs:  # the params its arms share, and a one-line description
        assert pair.data.params["seed"] == pair.data.tags["kd_imdb.seed"] and pair.data.params["max_len"] == "48"
        assert pair.data.tags["mlflow.note.content"].startswith(f"{pair.data.tags['kd_imdb.config']} seed ")
    for arm in arms:
        tags = arm.data.tags
        assert tags["mlflow.note.content"].startswith(f"{tags['kd_imdb.config']}, seed {tags['kd_imdb.seed']}, "
                                                      f"arm {tags['kd_imdb.arm']}: ")


def test_the_study_name_marks_a_bidirectional_gru_and_the_ngram_bag():
    base = dict(soft_labels_run_id="s", seeds=3)
    assert study_name(StudyConfig.from_flat(**base, grid="gru:16,64;cnn:64")) == "study gru16-64/cnn64 x3"
    assert study_name(StudyConfig.from_flat(**base, grid="gru:64", bidirectional=True)) == "study bigru64 x3"
    assert study_name(StudyConfig.from_flat(**base, grid="gru:64", bigram_buckets=8)) == "study gru64+bigrams x3"
    trigrams = StudyConfig.from_flat(**base, grid="gru:64", bigram_buckets=8, bag_ngrams=3)
    assert study_name(trigrams) == "study gru64+bi+trigrams x3"


def test_configuration_runs_and_the_study_run_hold_the_results(study, server_env, tmp_path):
    client, exp, study_id = study["client"], study["experiment_id"], study["id"]
    summary = pd.read_csv(client.download_artifacts(study_id, "results/summary.csv", str(tmp_path)))
    configs = runs_under(client, exp, study_id)
    assert len(configs) == 2
    for config in configs:
        m = config.data.metrics
        row = summary[(summary["arch"] + "-" + summary["hidden"].astype(str)) == config.data.tags["kd_imdb.config"]].iloc[0]
        assert m["kd_test_accuracy"] == round(row["accuracy_kd"], 4)
        assert m["scratch_test_accuracy_ci_low"] == round(row["accuracy_scratch_low"], 4)
        assert m["kd_minus_scratch_test_accuracy"] == round(row["accuracy_diff"], 4)
        assert m["kd_minus_scratch_test_accuracy_ci_high"] == round(row["accuracy_diff_high"], 4)
        assert 0 <= m["kd_minus_scratch_test_accuracy_p_holm"] <= 1
    mlflow.set_tracking_uri(server_env["MLFLOW_TRACKING_URI"])
    logged = mlflow.artifacts.load_dict(f"runs:/{study_id}/results/headline.json")  # mlflow.log_table's format
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert json.loads(client.get_run(study_id).data.tags["mlflow.loggedArtifacts"]) == [
        {"path": "results/headline.json", "type": "table"}]  # what the UI's table view lists
    assert sorted(table["student"]) == ["cnn-8", "gru-8"] and set(table["arm"]) == {"kd"}
    assert list(table["pairs"]) == [2, 2]


def test_study_outputs(study):
    client, tmp = study["client"], study["tmp"]
    local = client.download_artifacts(study["id"], "results", str(tmp))
    files = set(os.listdir(local))
    assert {"results.md", "runs.csv", "summary.csv", "accuracy_vs_hidden.png", "kd_gain_vs_hidden.png",
            "reliability.png"} <= files
    for png in ("accuracy_vs_hidden.png", "kd_gain_vs_hidden.png", "reliability.png"):
        assert open(os.path.join(local, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    runs = pd.read_csv(os.path.join(local, "runs.csv"))
    assert len(runs) == 8 and set(runs["arm"]) == {"scratch", "kd"}
    summary = pd.read_csv(os.path.join(local, "summary.csv"))
    assert len(summary) == 2
    for _, row in summary.iterrows():
        part = runs[(runs["arch"] == row["arch"]) & (runs["hidden"] == row["hidden"])]
        kd = part[part["arm"] == "kd"].sort_values("seed")["test_accuracy"].to_numpy()
        scratch = part[part["arm"] == "scratch"].sort_values("seed")["test_accuracy"].to_numpy()
        assert row["accuracy_diff"] == pytest.approx((kd - scratch).mean())
        assert row["accuracy_kd"] == pytest.approx(kd.mean())
        assert row["accuracy_holm_pvalue"] >= row["accuracy_t_pvalue"] or np.isnan(row["accuracy_t_pvalue"])
        assert row["mcnemar_pairs"] == 2
    table = open(os.path.join(local, "results.md")).read()
    assert "GRU-8" in table and "CNN-8" in table and "p (Holm)" in table
    assert "GRU-8" in study["stdout"]  # printed too


def test_registry_champion_is_best_by_validation(study, server_env):
    client = study["client"]
    runs = pd.read_csv(client.download_artifacts(study["id"], "results/runs.csv", str(study["tmp"])))
    champion = client.get_model_version_by_alias("kd-imdb-student", "champion")
    assert champion.run_id == runs.loc[runs["val_accuracy"].idxmax(), "run_id"]
    for arch in ("gru", "cnn"):
        best = client.get_model_version_by_alias("kd-imdb-student", f"best-{arch}")
        part = runs[runs["arch"] == arch]
        assert best.run_id == part.loc[part["val_accuracy"].idxmax(), "run_id"]
    # the registry explains itself: the model and each version described and tagged
    assert client.get_registered_model("kd-imdb-student").description.startswith("Tiny GRU/CNN students distilled")
    row = runs.loc[runs["val_accuracy"].idxmax()]
    assert champion.tags["arm"] == row["arm"] and champion.tags["hidden"] == str(row["hidden"])
    assert champion.tags["test_accuracy"] == f"{row['test_accuracy']:.4f}"
    assert champion.tags["study_run"] == study["id"] and champion.tags["teacher_run"] == study["soft_labels_run"]
    assert champion.description.startswith(f"{row['configuration']} seed {row['seed']}, arm {row['arm']}: ")
    logged = client.search_logged_models([study["experiment_id"]], filter_string=f"source_run_id = '{champion.run_id}'")
    assert [m.name for m in logged] == [f"student-{row['configuration']}-s{row['seed']}-{row['arm']}"]


def test_registered_model_ships_code_without_the_sample(study, server_env):
    import mlflow
    import torch

    mlflow.set_tracking_uri(server_env["MLFLOW_TRACKING_URI"])
    local = Path(mlflow.artifacts.download_artifacts("models:/kd-imdb-student@champion", dst_path=str(study["tmp"] / "champion")))
    code = local / "code" / "kd_imdb"
    assert (code / "serving.py").is_file() and (code / "students.py").is_file()
    assert not (code / "sample").exists() and not list(code.rglob("*.pyc"))
    size = sum(f.stat().st_size for f in local.rglob("*") if f.is_file())
    assert size < 2_000_000, size  # the weights of a tiny student and the code, not the 1.4 MB sample
    requirements = (local / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements


def test_predict_cli_and_pyfunc_agree(study, server_env):
    import mlflow

    proc = run_cli("predict", "--model", "models:/kd-imdb-student@champion", "A wonderful, moving film.",
                   "Terrible. A waste of time.", env=server_env, cwd=study["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    mlflow.set_tracking_uri(server_env["MLFLOW_TRACKING_URI"])
    out = mlflow.pyfunc.load_model("models:/kd-imdb-student@champion").predict(
        pd.DataFrame({"text": ["A wonderful, moving film.", "Terrible. A waste of time."]}))
    for line, (_, row) in zip(lines, out.iterrows()):
        sentiment, probability = line.split("\t")[:2]
        assert float(probability) == pytest.approx(row["probability"], abs=1e-4)
        assert sentiment == ("positive" if row["probability"] >= 0.5 else "negative")
        assert 0.0 <= row["probability"] <= 1.0


@pytest.mark.parametrize("bad, message", [(pd.DataFrame({"review": ["x"]}), r"missing inputs \['text'\]|no 'text' column"),
                                          (pd.DataFrame({"text": ["ok", ""]}), "empty"),
                                          (pd.DataFrame({"text": ["ok", 3]}), "not a string|Incompatible input types")])
def test_pyfunc_rejects_bad_input(study, server_env, bad, message):
    import mlflow

    mlflow.set_tracking_uri(server_env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model("models:/kd-imdb-student@champion")
    with pytest.raises(Exception, match=message):
        model.predict(bad)


def test_predict_cli_reads_reviews_from_stdin_and_jsonl(study, server_env):
    long = "A wonderful, moving film. " * 20000  # 520 kB: over the OS limit for one command-line argument
    reviews = [long, "Terrible. A waste of time."]
    by_line = run_cli("predict", "--input", "-", stdin="\n".join(reviews) + "\n", env=server_env, cwd=study["tmp"])
    assert by_line.returncode == 0, by_line.stderr[-2000:]
    (study["tmp"] / "reviews.jsonl").write_text("".join(json.dumps({"text": r}) + "\n" for r in reviews))
    by_json = run_cli("predict", "--input", str(study["tmp"] / "reviews.jsonl"), env=server_env, cwd=study["tmp"])
    assert by_json.returncode == 0, by_json.stderr[-2000:]
    assert by_line.stdout == by_json.stdout and len(by_line.stdout.splitlines()) == 2
    (study["tmp"] / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    bad = run_cli("predict", "--input", str(study["tmp"] / "bad.jsonl"), env=server_env, cwd=study["tmp"])
    assert bad.returncode == 2 and "line 2: not valid JSON" in bad.stderr and "Traceback" not in bad.stderr
    neither = run_cli("predict", env=server_env, cwd=study["tmp"])
    assert neither.returncode == 2 and "--input" in neither.stderr


def test_predict_cli_rejects_empty_review(study, server_env):
    proc = run_cli("predict", "--model", "models:/kd-imdb-student@champion", "  ", env=server_env, cwd=study["tmp"])
    assert proc.returncode == 2 and "empty" in proc.stderr and "Traceback" not in proc.stderr


def test_mlflow_models_predict_on_json(study, server_env):
    tmp = study["tmp"]
    (tmp / "input.json").write_text(json.dumps({"dataframe_split": {"columns": ["text"],
                                                                     "data": [["Great acting."], ["Awful."]]}}))
    env = {**os.environ, **server_env, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", "models:/kd-imdb-student@champion",
                           "-i", str(tmp / "input.json"), "-t", "json", "--env-manager", "local"],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    predictions = json.loads(proc.stdout.strip().splitlines()[-1])["predictions"]
    assert len(predictions) == 2 and {"label", "probability"} <= set(predictions[0])


def test_rerun_skips_finished_runs(study, server_env, soft_labels_run):
    client = study["client"]
    before = finished_cells(client, study["experiment_id"], study["id"])
    proc = run_cli("study", "--soft-labels-run-id", soft_labels_run, "--grid", "gru:8;cnn:8", "--seeds", "2",
                   "--workers", "2", "--register", "false", *SMALL, env=server_env, cwd=study["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 seed pairs to train, 4 already finished" in proc.stderr
    assert finished_cells(client, study["experiment_id"], study["id"]) == before
    assert set(before.values()) == {1} and len(before) == 8


def test_study_report_rebuilds_the_tables_from_the_runs(study, server_env):
    client = study["client"]
    for name in ("before", "after"):
        (study["tmp"] / name).mkdir()
    before = pd.read_csv(client.download_artifacts(study["id"], "results/summary.csv", str(study["tmp"] / "before")))
    proc = run_cli("study-report", "--study-run-id", study["id"], env=server_env, cwd=study["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout.strip()
    assert table and table in study["stdout"]  # the very table the study printed
    after = pd.read_csv(client.download_artifacts(study["id"], "results/summary.csv", str(study["tmp"] / "after")))
    pd.testing.assert_frame_equal(before, after)
    bad = run_cli("study-report", "--study-run-id", study["soft_labels_run"], env=server_env, cwd=study["tmp"])
    assert bad.returncode == 2 and "not a study" in bad.stderr


def test_notebook_rebuilds_the_study_tables(study, server_env, tmp_path):
    """Execute notebooks/study_report.ipynb against the study on the real server (nbclient)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "study_report.ipynb", as_version=4)
    env = {**server_env, "KD_IMDB_STUDY_RUN_ID": study["id"], "KD_IMDB_NOTEBOOK_OUT": str(tmp_path / "out")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    rebuilt = pd.read_csv(tmp_path / "out" / "summary.csv")
    logged = pd.read_csv(study["client"].download_artifacts(study["id"], "results/summary.csv", str(tmp_path)))
    pd.testing.assert_frame_equal(rebuilt, logged)
    assert (tmp_path / "out" / "accuracy_vs_hidden.png").read_bytes()[:4] == b"\x89PNG"
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]


def test_study_key_ignores_arms_and_keeps_old_keys():
    from kd_imdb.config import StudyConfig

    base = dict(soft_labels_run_id="abc", grid="gru:256", seeds=3)
    more_arms = StudyConfig.from_flat(**base, arms="scratch,kd,kd_mse,shuffled")
    assert StudyConfig.from_flat(**base, arms="scratch,kd").key() == more_arms.key()
    assert StudyConfig.from_flat(**{**base, "seeds": 4}).key() != StudyConfig.from_flat(**base).key()
    assert StudyConfig.from_flat(**base, label_budget=1000).key() != StudyConfig.from_flat(**base).key()
    assert (StudyConfig.from_flat(**base, arms="scratch,kd@linear", teachers="linear=x").key()
            != StudyConfig.from_flat(**base, arms="scratch,kd@linear", teachers="linear=y").key())
    # Studies started before arms could be added are still found by the key they were tagged with
    # (golden values computed by the code of that time).
    assert StudyConfig.from_flat(**base, arms="scratch,kd,label_smoothing").legacy_key() == "bd5bb8ef53646e4c"
    assert StudyConfig.from_flat(**base, arms="scratch,kd@linear", teachers="linear=x").legacy_key() == "d4c4bb693274fe5c"


def test_rerun_with_more_arms_extends_the_study(study, server_env, soft_labels_run):
    """Last in this module: it adds label_smoothing to the study the other tests read."""
    client = study["client"]
    before = _cell_runs(client, study["experiment_id"], study["id"])
    proc = run_cli("study", "--soft-labels-run-id", soft_labels_run, "--grid", "gru:8;cnn:8", "--seeds", "2",
                   "--workers", "2", "--register", "false", "--arms", "scratch,kd,label_smoothing", *SMALL,
                   env=server_env, cwd=study["tmp"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 seed pairs to train, 0 already finished" in proc.stderr
    assert proc.stdout.strip().split()[-1] == study["id"]  # the same study, not a new one
    after = _cell_runs(client, study["experiment_id"], study["id"])
    assert {k: v for k, v in after.items() if k[2] != "label_smoothing"} == before  # old arms untouched
    assert sorted(k for k in after if k[2] == "label_smoothing") == [
        ("cnn-8", 0, "label_smoothing"), ("cnn-8", 1, "label_smoothing"),
        ("gru-8", 0, "label_smoothing"), ("gru-8", 1, "label_smoothing")]
    for (config, seed, _arm), run_id in after.items():  # the new arm starts from its scratch partner's weights
        assert (client.get_run(run_id).data.tags["init_sha256"]
                == client.get_run(after[(config, seed, "scratch")]).data.tags["init_sha256"])
    summary = client.download_artifacts(study["id"], "results/summary.csv", str(study["tmp"] / "extended"))
    assert set(pd.read_csv(summary)["arm"]) == {"kd", "label_smoothing"}


def _cell_runs(client, experiment_id: str, study_id: str) -> dict:
    """(configuration, seed, arm) -> the id of its FINISHED run."""
    from kd_imdb.ledger import collect

    frame = collect(client, experiment_id, study_id)
    return {(r.configuration, int(r.seed), r.arm): r.run_id for r in frame.itertuples()}


def test_register_picks_the_best_by_validation_across_several_runs_csv(study, server_env, tmp_path):
    """Seeds trained in two studies: ``kd-imdb register`` chooses among the rows of both files (whose
    row labels overlap), within the arms asked for; a bad file or arm registers nothing."""
    client = study["client"]
    runs = pd.read_csv(client.download_artifacts(study["id"], "results/runs.csv", str(tmp_path)))
    kd = runs[runs["arm"] == "kd"]
    for arch in ("gru", "cnn"):
        runs[runs["arch"] == arch].to_csv(tmp_path / f"{arch}.csv", index=False)
    proc = run_cli("register", str(tmp_path / "gru.csv"), str(tmp_path / "cnn.csv"), "--arms", "kd",
                   env=server_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    champion = client.get_model_version_by_alias("kd-imdb-student", "champion")
    assert champion.run_id == kd.loc[kd["val_accuracy"].idxmax(), "run_id"]
    assert f"kd-imdb-student@champion: version {champion.version}" in proc.stdout
    assert client.get_model_version(champion.name, champion.version).tags["selected_on"] == "val_accuracy"
    # --by val_log_loss: the lowest log-loss wins, here put on a run that is not the most accurate
    other = kd[kd["run_id"] != champion.run_id].iloc[0]["run_id"]
    kd.assign(val_log_loss=np.where(kd["run_id"] == other, 0.1, 0.5)).to_csv(tmp_path / "ll.csv", index=False)
    proc = run_cli("register", str(tmp_path / "ll.csv"), "--by", "val_log_loss", env=server_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_loss = client.get_model_version_by_alias("kd-imdb-student", "champion")
    assert by_loss.run_id == other
    assert by_loss.tags["selected_on"] == "val_log_loss" and by_loss.tags["val_log_loss"] == "0.1000"
    assert "log-loss 0.1000 (selected on val_log_loss)" in by_loss.description
    client.set_registered_model_alias("kd-imdb-student", "champion", champion.version)  # as the study left it
    runs.assign(run_id="0" * 32).to_csv(tmp_path / "gone.csv", index=False)
    for args, message in [([str(tmp_path / "gru.csv"), "--arms", "kd_mse"], "no run of the arms 'kd_mse'"),
                          ([str(tmp_path / "gone.csv")], "not found in")]:
        proc = run_cli("register", *args, env=server_env, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and message in proc.stderr, proc.stderr
    assert client.get_model_version_by_alias("kd-imdb-student", "champion").version == champion.version
