#!/usr/bin/env bash
# Makes here what scripts/gpu_run.sh needs on a lent GPU machine that has no network (both ignored by git):
#   .whl/                  wheels, for that machine's Python 3.12, of the packages its image lacks
#   .gpu_data/imdb.tar.xz  ../shared/data/imdb as uncompressed parquet in one xz archive (36 MB, the
#                          working tree that travels is capped at 64 MiB)
# then, with the device tool:  run  command="BUDGET=550 bash scripts/gpu_run.sh"  carry=[".whl", ".gpu_data"]
set -eu
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl .gpu_data
# --no-deps: the machine already has torch, numpy, pandas, pyarrow, scikit-learn, transformers, ...
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl -c constraints.txt \
    mlflow-skinny mlflow-tracing sqlalchemy alembic mako sqlparse databricks-sdk fastapi starlette uvicorn \
    pydantic pydantic-core annotated-types typing-inspection gitpython gitdb smmap importlib-metadata \
    opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions cachetools \
    python-dotenv cryptography cffi pycparser optuna colorlog datasets dill multiprocess
du -sh .whl
if [ ! -f .gpu_data/imdb.tar.xz ]; then
    tmp=$(mktemp -d)
    "$PY" -c "
import pandas as pd, sys
for split in ('train', 'test', 'unsupervised'):
    pd.read_parquet(f'../shared/data/imdb/{split}.parquet').to_parquet(f'$tmp/{split}.parquet', index=False, compression=None)
"
    tar cJf .gpu_data/imdb.tar.xz -C "$tmp" train.parquet test.parquet unsupervised.parquet
    rm -rf "$tmp"
fi
du -sh .gpu_data
