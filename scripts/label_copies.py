"""Teacher labels for the perturbed copies of ``scripts/augment_data.py``, beside a committed teacher's labels
for the original reviews, as one logits file for the augmented data folder:

    python scripts/label_copies.py --teacher-run-id B --linear-runs N,T --data /work/imdb_aug \
        --base-logits results/stacked_teacher_logits.parquet --out /work/stacked_aug_logits.parquet
    kd-imdb soft-labels --logits-file /work/stacked_aug_logits.parquet --data /work/imdb_aug --unsupervised true

Why not label the whole folder again: the stack's MiniLM member is a fine-tuned model whose weights a
session does not keep (only its logits are committed), so a new fine-tune of the same recipe (``B``)
labels the copies. Relabelling the 100,000 original reviews with it as well would cost another hour of
windowed labelling for labels that already exist. So:

- the original reviews keep the labels of ``--base-logits`` (the committed stack, teacher A);
- the copies get the labels of teacher B's own stack: B scores the validation reviews and the copies,
  every window, as ``kd-imdb soft-labels --stride`` does (int8, pooling chosen on validation); a logistic
  regression on the margins of [B, the linear members] is fitted on validation only
  (``kd_imdb.ensemble.fit_stack``) and applied to the copies.

It prints how each teacher scores on validation and how often A's and B's stacks agree there: the
copies' teacher is a sibling of the originals', and that number says how close.
"""
from __future__ import annotations

import dataclasses
import json
import logging

import click
import numpy as np
import pandas as pd

from kd_imdb import tracking
from kd_imdb.data import load_data
from kd_imdb.ensemble import fit_stack, margins, stacked_logits
from kd_imdb.soft_labels import SoftLabelsConfig, label, load_for_data, read_logits, write_logits

log = logging.getLogger(__name__)


@click.command(help=__doc__.split("\n\n")[0])
@click.option("--teacher-run-id", required=True, help="A MiniLM teacher run (kd-imdb teacher) for the copies.")
@click.option("--linear-runs", required=True, help="Comma-separated soft-labels runs of the linear members, on --data.")
@click.option("--data", required=True, help="The augmented data folder (scripts/augment_data.py --out).")
@click.option("--base-logits", required=True, help="Logits file whose labels the original reviews keep.")
@click.option("--out", required=True, help="Logits file to write (every review of --data).")
@click.option("--stride", default=126, show_default=True, help="Tokens between the teacher's windows.")
@click.option("--onnx-int8/--fp32", default=True, show_default=True, help="Score the windows with the int8 teacher.")
@click.option("--cache-dir", default="checkpoints", show_default=True, help="Chunk cache: a killed run resumes.")
def main(teacher_run_id: str, linear_runs: str, data: str, base_logits: str, out: str, stride: int,
         onnx_int8: bool, cache_dir: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracking.setup_tracking(tracking.EXPERIMENT)
    members = [r.strip() for r in linear_runs.split(",") if r.strip()]
    full = load_data(data, unsupervised=True)
    base, base_fingerprint = read_logits(base_logits)
    if base_fingerprint.get("data_hash") not in (None, full.content_hash):
        raise click.UsageError(f"{base_logits} was made for other labelled reviews than {data}")
    base = base.drop_duplicates("id").set_index("id")[["logit_0", "logit_1"]]
    labelled = full.frame["split"] != "unsupervised"
    if not full.frame.loc[labelled, "id"].isin(base.index).all():
        raise click.UsageError(f"{base_logits} misses some labelled reviews of {data}")
    is_copy = ~full.frame["id"].isin(base.index)  # unlabelled reviews the base teacher never saw
    is_val = (full.frame["split"] == "validation").to_numpy()
    print(f"{data}: {int(is_copy.sum()):,} copies to label, {len(base):,} reviews keep {base_logits}'s labels")

    # Teacher B, every window of the validation reviews and the copies.
    copy_rows = is_copy.to_numpy()
    rows = is_val | copy_rows  # what teacher B scores and stack B labels
    subset = dataclasses.replace(full, frame=full.frame[rows].reset_index(drop=True))
    cfg = SoftLabelsConfig(teacher_run_id=teacher_run_id, data=data, unsupervised=True, onnx_int8=onnx_int8,
                           stride=stride, cache_dir=cache_dir)
    windowed, fingerprint, metrics = label(cfg, subset, teacher_run_id)
    windowed = windowed.set_index("id")[["logit_0", "logit_1"]]
    aligned = [windowed.reindex(full.frame["id"]).to_numpy(np.float64)]  # [n, 2], NaN outside the subset
    aligned += [load_for_data(r, full).to_numpy(np.float64) for r in members]
    m = np.stack([margins(a) for a in aligned], axis=1)  # [n, k], NaN outside the subset for teacher B

    y = full.frame["label"].to_numpy()
    stack, cv_accuracy = fit_stack(m[is_val], y[is_val].astype(int))
    logits_b = stacked_logits(stack, m)  # [n, 2]; NaN for the reviews teacher B did not score
    d = margins(logits_b)  # the stacked log-odds of teacher B's stack
    base_val = margins(base.loc[full.frame["id"][is_val]].to_numpy())
    print(f"teacher B windowed ({fingerprint['pooling']} pooling) val accuracy "
          f"{((m[is_val, 0] > 0) == y[is_val]).mean():.4f}; int8 review agreement "
          f"{metrics.get('int8_review_top1_agreement', float('nan')):.4f}; "
          f"{metrics['windows_per_review']:.2f} windows per review")
    for r, k in zip(members, range(1, m.shape[1])):
        print(f"member {r[:8]} val accuracy {((m[is_val, k] > 0) == y[is_val]).mean():.4f}")
    print(f"stack B: weights {np.round(stack.coef_[0], 3).tolist()}, intercept {stack.intercept_[0]:.3f}, "
          f"cross-validated val accuracy {cv_accuracy:.4f}")
    print(f"stack A val accuracy {((base_val > 0) == y[is_val]).mean():.4f} (in-sample); stacks A and B agree on "
          f"{((base_val > 0) == (d[is_val] > 0)).mean():.4f} of validation reviews; "
          f"margin correlation {np.corrcoef(base_val, d[is_val])[0, 1]:.3f}")
    copy_margins = d[copy_rows]
    print(f"copies: {(copy_margins > 0).mean():.3f} labelled positive; mean |margin| {np.abs(copy_margins).mean():.2f} "
          f"(the base teacher's, over the original reviews: {np.abs(margins(base.to_numpy())).mean():.2f})")

    copies = full.frame.loc[is_copy, ["id", "split"]].assign(logit_0=logits_b[copy_rows, 0], logit_1=logits_b[copy_rows, 1])
    originals = full.frame.loc[~is_copy, ["id", "split"]].join(base, on="id")
    frame = pd.concat([originals, copies]).drop_duplicates("id").reset_index(drop=True)
    out_fingerprint = {
        "teacher_run_id": f"{base_fingerprint.get('teacher_run_id', base_logits)} + copies:stack:"
                          + "+".join([teacher_run_id, *members]),
        "teacher": "stack", "data_hash": full.content_hash, "base_logits": str(base_logits),
        "copies_members": [teacher_run_id, *members], "copies_pooling": fingerprint["pooling"],
        "copies_weights": [round(float(w), 6) for w in stack.coef_[0]], "copies_intercept": round(float(stack.intercept_[0]), 6),
    }
    write_logits(frame, out_fingerprint, out)
    print(f"wrote {out}: {len(frame):,} reviews; fingerprint {json.dumps(out_fingerprint)}")


if __name__ == "__main__":
    main()
