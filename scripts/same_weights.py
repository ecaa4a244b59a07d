"""Does a refactor change what training computes? Train the same small students with the code of an
earlier commit and with the working tree, then compare their weights byte for byte.

    python scripts/same_weights.py --rev 08fb0f0 --data ../shared/data/imdb --soft-labels-run-id ID

Each side runs ``kd-imdb student`` from its own source tree (a git worktree of ``--rev``, then this
checkout) against the tracking store of ``MLFLOW_TRACKING_URI``, in the experiment ``same-weights``: a
GRU-16 seed pair (scratch and KD) and a CNN-16 transfer-set KD arm, 48 words, 1 epoch, seed 3. It prints
each arm's safetensors digest on both sides and exits 1 if any differs.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
RUNS = (["--hidden", "16", "--mode", "pair"], ["--arch", "cnn", "--hidden", "16", "--mode", "kd_transfer"])


def train(source: Path, data: str, labels: str, env: dict) -> None:
    for extra in RUNS:
        subprocess.run([sys.executable, "-m", "kd_imdb.cli", "student", "--data", data, "--soft-labels-run-id", labels,
                        "--max-len", "48", "--epochs", "1", "--seed", "3", *extra],
                       cwd=source, env={**env, "PYTHONPATH": str(source)}, check=True, stdout=subprocess.DEVNULL)


def digests(client: MlflowClient, experiment_id: str, after_ms: int) -> dict[tuple, str]:
    """{(arch, hidden, arm): sha256 of the arm's model.safetensors} of the arm runs started after ``after_ms``."""
    out = {}
    for run in client.search_runs([experiment_id], f"attributes.start_time > {after_ms}"):
        if run.info.status == "FINISHED" and "kd_imdb.arm" in run.data.tags:
            path = client.download_artifacts(run.info.run_id, "student/model.safetensors")
            key = (run.data.params["arch"], run.data.params["hidden"], run.data.tags["kd_imdb.arm"])
            out[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


@click.command()
@click.option("--rev", required=True, help="The commit to compare the working tree with.")
@click.option("--data", required=True)
@click.option("--soft-labels-run-id", "labels", required=True)
def main(rev: str, data: str, labels: str) -> None:
    env = {**os.environ, "MLFLOW_EXPERIMENT_NAME": "same-weights", "TQDM_DISABLE": "1"}
    data = str(Path(data).resolve()) if Path(data).exists() else data
    client = MlflowClient()
    sides = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=ROOT, check=True, capture_output=True)
        try:
            for name, source in (("old", old), ("new", ROOT)):
                experiment = client.get_experiment_by_name("same-weights")
                start = max([r.info.start_time for r in client.search_runs([experiment.experiment_id])], default=0) \
                    if experiment else 0
                train(source, data, labels, env)
                sides[name] = digests(client, client.get_experiment_by_name("same-weights").experiment_id, start)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    same = True
    for key in sorted(sides["new"]):
        a, b = sides["old"].get(key, "missing"), sides["new"][key]
        same &= a == b
        click.echo(f"{'-'.join(key[:2])} {key[2]}: {rev} {a[:16]}, working tree {b[:16]}: "
                   f"{'identical' if a == b else 'DIFFERENT'}")
    sys.exit(0 if same and sides["new"] else 1)


if __name__ == "__main__":
    main()
