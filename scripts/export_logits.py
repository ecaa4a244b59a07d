"""Export a soft-labels run's logits (ids and logits only, with the fingerprint) for committing.

    python scripts/export_logits.py <soft_labels_run_id> results/teacher_logits.parquet

Later work registers the file instead of rerunning the teacher:
    kd-imdb soft-labels --logits-file results/teacher_logits.parquet --data ../shared/data/imdb --unsupervised true
"""
import sys

import mlflow

from kd_imdb.soft_labels import ARTIFACT, read_logits, write_logits

run_id, out = sys.argv[1], sys.argv[2]
frame, fingerprint = read_logits(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT))
frame = frame[["id", "logit_0", "logit_1"]].astype({"logit_0": "float32", "logit_1": "float32"})
write_logits(frame, {**fingerprint, "soft_labels_run_id": run_id}, out)
print(f"wrote {out}: {len(frame)} reviews, fingerprint {fingerprint}")
