"""The executor with real processes and a real Optuna SQLite storage: every cell runs once, workers
are single-thread, a dead worker is reported, and the shared queue never runs a cell twice."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import torch

from kd_imdb import executor


class Recorder:
    """A cell handler that writes what it saw; it counts the cells its own process handled."""

    def __init__(self, out: str):
        self.out = out
        self.handled = 0

    def __call__(self, cell) -> int:
        self.handled += 1
        Path(self.out, f"{cell}.json").write_text(json.dumps(
            {"pid": os.getpid(), "threads": torch.get_num_threads(), "uri": mlflow.get_tracking_uri(),
             "handled_before": self.handled - 1}))
        return 1


def test_run_local_runs_every_cell_once_on_single_thread_workers(tmp_path):
    executor.run_local(Recorder(str(tmp_path)), list(range(6)), workers=2, tracking_uri="sqlite:///x.db")
    seen = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    assert len(seen) == 6
    assert {s["threads"] for s in seen} == {1} and {s["uri"] for s in seen} == {"sqlite:///x.db"}
    assert len({s["pid"] for s in seen}) <= 2 and os.getpid() not in {s["pid"] for s in seen}
    assert max(s["handled_before"] for s in seen) >= 1  # a worker keeps its handler between cells


class Reporter:
    """A cell handler that shows a status line in the parent's bar (and writes whether it could)."""

    def __init__(self, out: str):
        self.out = out

    def __call__(self, cell) -> int:
        status = executor.status_reporter()
        Path(self.out, f"{cell}.txt").write_text(str(status is not None))
        status(f"cell {cell} halfway")
        return 1


def test_one_progress_bar_counts_the_cells_and_shows_each_workers_status(tmp_path, capfd):
    """The parent's one bar reaches 4/4 with each worker's last line as w<i> text; a worker's status
    reaches it, and outside a worker there is no reporter (the caller draws its own bar)."""
    executor.run_local(Reporter(str(tmp_path)), list(range(4)), workers=2, tracking_uri="sqlite:///x.db")
    err = capfd.readouterr().err
    assert {p.read_text() for p in tmp_path.glob("*.txt")} == {"True"}
    assert "4/4" in err and err.count("4/4") <= 2  # one bar (its last refresh and its close)
    assert "halfway" in err and ("w0 cell" in err or "w1 cell" in err)
    assert executor.status_reporter() is None


def exit_with(code: int, index: int) -> None:
    if index == 1:
        os._exit(code)


def test_a_dead_worker_is_reported():
    with pytest.raises(executor.WorkerLost, match=r"1 study worker\(s\) died \(exit codes \[3\]\)"):
        executor.join_workers(executor.start_workers(functools.partial(exit_with, 3), 2, "sqlite:///x.db"),
                              "study worker")
    assert executor.join_workers(executor.start_workers(functools.partial(exit_with, 3), 2, "sqlite:///x.db"),
                                 strict=False) == [3]


# A worker's first lines: note that it started, ask to die with the parent whose pid it was given, then
# note that it lives on. The sleep stands for a spawned worker's interpreter start-up.
WORKER = ("import sys, time; from pathlib import Path; out = Path(sys.argv[2]); out.write_text('started'); "
          "time.sleep(1.0); from kd_imdb.executor import die_with_parent; die_with_parent(int(sys.argv[1])); "
          "out.write_text('lived on')")


def test_a_worker_whose_parent_died_before_it_asked_to_die_with_it_exits(tmp_path):
    # bash starts the worker in the background and exits at once: the parent is gone before the request
    orphan = tmp_path / "orphan"
    subprocess.run(["bash", "-c", f'"{sys.executable}" -c "$0" $$ "$1" & echo $! > "$1.pid"', WORKER, str(orphan)], check=True)
    pid = int(Path(f"{orphan}.pid").read_text())
    deadline = time.time() + 60
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert orphan.read_text() == "started"  # it exited instead of training on
    # with its parent alive (this process), the same worker lives on
    child = tmp_path / "child"
    subprocess.run([sys.executable, "-c", WORKER, str(os.getpid()), str(child)], check=True, timeout=60)
    assert child.read_text() == "lived on"


def test_the_shared_queue_runs_each_queued_cell_once(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="cells", storage=executor.make_storage(url), direction="maximize")
    cells = [{"name": n} for n in "abcd"]
    executor.enqueue_cells(study, cells, [True, False, True, True])
    executor.enqueue_cells(study, cells, [True, False, True, True])  # a rerun queues nothing twice
    assert executor.waiting(study) == 3
    seen = []
    executor.pop_cells(executor.load_shared_study("cells", url), lambda cell: seen.append(cell["name"]) or 2)
    assert sorted(seen) == ["a", "c", "d"]
    assert [t.value for t in study.get_trials()] == [2.0, 2.0, 2.0]
    executor.wait_for_workers(study, poll_s=0.1)  # nothing queued or running: returns at once
    assert executor.queue_empty_trials(study, 5) == 2 and executor.queue_empty_trials(study, 5) == 0


def test_an_unknown_storage_or_study_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="cannot use it"):
        executor.make_storage("nosuchdb://x")
    with pytest.raises(ValueError, match=r"no study 'nope' in .*studies there: none"):
        executor.load_shared_study("nope", f"sqlite:///{tmp_path}/empty.db")
