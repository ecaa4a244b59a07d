"""Every student run's configuration: typed, frozen, validated on construction, defaults in one place.

A student run is an ``ArmConfig``: the student (``StudentSpec``), its training (``Training``) and its
distillation (``Distillation``). A study and a sweep are a base ``ArmConfig`` plus what they vary; each
seed pair or trial is the base changed with ``dataclasses.replace``.

Runs talk to each other through one serial form, the **flat dict**: the parameter names the CLI, the
MLproject entry points, MLflow params, ``config.json`` and a study's key use (``hidden``, ``max_len``,
``teachers="linear=RUN_ID"``...). ``flat()`` writes it and ``from_flat()`` parses it, once, at the edge:
lists and mappings travel as strings only there. The CLI's options and defaults are generated from
``defaults()`` (tests/test_packaging.py checks MLproject against them).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

ARCHS = ("gru", "cnn")
ORIGIN_EPOCHS = {"gru": 4, "cnn": 3}  # the origin study's schedule, used when epochs is 0
DEFAULT_GRID = "gru:16,32,64,128,256;cnn:64,128,256"
LR_SCHEDULES = ("constant", "cosine")  # cosine: from lr down to 0 over all epochs, step by step
# What a champion may be registered on, and whether more is better: validation measures only, never test.
SELECTION = {"val_accuracy": "max", "val_log_loss": "min"}

# Arms: how a student of a seed pair is trained. All start from the seed's initial weights and batches.
ARMS = {
    "scratch": "cross-entropy on the labels",
    "kd": "KD loss (KL at temperature T, alpha)",
    "kd_hard": "KD loss, then hard_epochs of cross-entropy (the origin's other arm)",
    "kd_mse": "MSE on the teacher's logit margin (the T -> infinity limit; Tang et al. 2019)",
    "kd_transfer": "KD on train plus the teacher-labelled unlabelled reviews (Hinton et al.'s transfer set)",
    "shuffled": "KD from the teacher's logits permuted across reviews (a control: right marginals, no knowledge)",
    "label_smoothing": "cross-entropy with label smoothing matched to the teacher's mean confidence (teacher-free)",
}
# Plus "kd@NAME": the KD loss with another teacher's soft labels (``teachers`` = {NAME: RUN_ID}), so
# that one study compares teachers against one shared scratch arm.
MODES = ("pair", *ARMS)


def describe_arm(arm: str) -> str:
    """How ``arm`` trains, in words (run and registry descriptions)."""
    return ARMS.get(arm) or f"KD loss with teacher {arm[3:]}'s soft labels"


def is_arm(arm: str, teachers: Mapping[str, str]) -> bool:
    """An arm of ``ARMS``, or ``kd@NAME`` with NAME among ``teachers``."""
    return arm in ARMS or (arm.startswith("kd@") and arm[3:] in teachers)


# ----------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class StudentSpec:
    """The architecture of a student (what is needed to rebuild it from its weights)."""

    arch: str = "gru"
    hidden: int = 64
    embedding_dim: int = 128
    vocab_size: int = 20000
    dropout: float = 0.3
    kernel_sizes: tuple[int, ...] = (3, 4, 5)  # CNN only
    bidirectional: bool = False  # GRU only: a second GRU reads each review right to left
    bigram_buckets: int = 0  # > 0: a bag of hashed word bigrams beside the GRU/CNN (fastText); 0 = none
    bag_ngrams: int = 2  # the bag's longest word n-gram: 2 = bigrams, 3 = bigrams and trigrams in the same buckets
    bag_dim: int = 16  # numbers per bucket; the output layer reads them linearly

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if not 1 <= self.hidden <= 4096:
            raise ValueError(f"hidden must lie in [1, 4096], got {self.hidden}")
        if self.embedding_dim < 1 or self.vocab_size < 3:
            raise ValueError("embedding_dim must be >= 1 and vocab_size >= 3")
        if not isinstance(self.kernel_sizes, tuple) or not self.kernel_sizes:
            raise ValueError(f"kernel_sizes must be a non-empty tuple, got {self.kernel_sizes!r}")
        if self.bidirectional and self.arch != "gru":
            raise ValueError(f"bidirectional is a GRU option; arch is {self.arch!r}")
        if self.bigram_buckets < 0:
            raise ValueError(f"bigram_buckets must be 0 (no bigram bag) or > 0, got {self.bigram_buckets}")
        if self.bag_ngrams not in (2, 3):
            raise ValueError(f"bag_ngrams must be 2 (bigrams) or 3 (bigrams and trigrams), got {self.bag_ngrams}")
        if self.bag_ngrams != 2 and not self.bigram_buckets:
            raise ValueError(f"bag_ngrams {self.bag_ngrams} needs a bag: set bigram_buckets > 0 too")
        if not 1 <= self.bag_dim <= 1024:
            raise ValueError(f"bag_dim must lie in [1, 1024], got {self.bag_dim}")

    @property
    def name(self) -> str:
        """How runs and tables name the student: ``gru-32``, ``bigru-32``, ``cnn-64``, ``gru-64+bigrams``,
        ``gru-64+bi+trigrams``."""
        return f"{'bi' if self.bidirectional else ''}{self.arch}-{self.hidden}{self.bag_suffix}"

    @property
    def bag_suffix(self) -> str:
        """What the n-gram bag adds to a student's name: ``+bigrams``, ``+bi+trigrams`` or nothing, and
        ``-d1`` for a bag whose buckets hold 1 number instead of 16."""
        suffix = {0: "", 2: "+bigrams", 3: "+bi+trigrams"}[self.bag_ngrams if self.bigram_buckets else 0]
        return suffix + (f"-d{self.bag_dim}" if suffix and self.bag_dim != StudentSpec.bag_dim else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "kernel_sizes": list(self.kernel_sizes)}

    @classmethod
    def from_dict(cls, d: Mapping) -> StudentSpec:
        """From ``to_dict`` (a student's ``config.json``; older ones lack the newer fields)."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "kernel_sizes": tuple(known.get("kernel_sizes", (3, 4, 5)))})


@dataclass(frozen=True)
class Training:
    """How a student is trained, whatever its loss."""

    epochs: int = 0  # 0 = the origin's: 4 for GRU, 3 for CNN
    lr: float = 2e-3
    lr_schedule: str = "constant"  # one of LR_SCHEDULES
    batch_size: int = 64
    max_len: int = 256  # words per review (head + tail)
    hard_epochs: int = 0  # hard-label epochs after KD (the arm kd_hard)
    label_budget: int = 0  # > 0: train on this many labelled reviews (nested, stratified); 0 = all
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.hard_epochs < 0:
            raise ValueError("epochs and hard_epochs must be >= 0")
        if self.label_budget == 1 or self.label_budget < 0:
            raise ValueError(f"label_budget must be 0 (all) or >= 2, got {self.label_budget}")
        if not 0 < self.lr < 1 or self.batch_size < 1 or self.max_len < 1:
            raise ValueError("lr must lie in (0, 1), batch_size and max_len must be >= 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


@dataclass(frozen=True)
class Distillation:
    """What the student learns from: the arm, the KD loss's temperature and alpha, the other teachers."""

    mode: str = "pair"  # a seed pair (scratch and kd), or one arm of ARMS, or kd@NAME
    temperature: float = 2.0
    alpha: float = 1.0  # weight of the soft term; 1 = soft targets only (the origin)
    teachers: Mapping[str, str] = field(default_factory=dict)  # {NAME: soft-labels RUN_ID} for kd@NAME

    def __post_init__(self) -> None:
        if self.mode != "pair" and not is_arm(self.mode, self.teachers):
            raise ValueError(f"mode must be one of {MODES} or kd@NAME with NAME in teachers, got {self.mode!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")


# ----------------------------------------------------------------------------- the flat form's lists


def parse_teachers(text: str) -> dict[str, str]:
    """``"linear=abc,ensemble=def"`` -> {"linear": "abc", "ensemble": "def"}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, run_id = part.partition("=")
        if not name.strip() or not run_id.strip() or name.strip() in out:
            raise ValueError(f"teachers {text!r} is malformed; write it like 'linear=RUN_ID,ensemble=RUN_ID'")
        out[name.strip()] = run_id.strip()
    return out


def format_teachers(teachers: Mapping[str, str]) -> str:
    return ",".join(f"{name}={run_id}" for name, run_id in teachers.items())


def parse_grid(text: str) -> tuple[tuple[str, int], ...]:
    """``"gru:16,32;cnn:64"`` -> (("gru", 16), ("gru", 32), ("cnn", 64))."""
    out = []
    try:
        for part in filter(None, (p.strip() for p in text.split(";"))):
            arch, sizes = part.split(":")
            out += [(arch.strip(), int(h)) for h in sizes.split(",")]
    except ValueError as exc:
        raise ValueError(f"grid {text!r} is malformed; write it like {DEFAULT_GRID!r}") from exc
    if not out:
        raise ValueError("grid is empty")
    return tuple(out)


def format_grid(grid: tuple[tuple[str, int], ...]) -> str:
    """The inverse of ``parse_grid``: consecutive students of one architecture share a group."""
    groups: list[tuple[str, list[int]]] = []
    for arch, hidden in grid:
        if not groups or groups[-1][0] != arch:
            groups.append((arch, []))
        groups[-1][1].append(hidden)
    return ";".join(f"{arch}:{','.join(map(str, sizes))}" for arch, sizes in groups)


def parse_arms(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


# ----------------------------------------------------------------------------- one arm run


@dataclass(frozen=True)
class ArmConfig:
    """One student run (the ``student`` entry point): a seed pair, or one arm."""

    data: str = "sample"
    soft_labels_run_id: str = ""
    seed: int = 0
    student: StudentSpec = field(default_factory=StudentSpec)
    training: Training = field(default_factory=Training)
    distillation: Distillation = field(default_factory=Distillation)

    def __post_init__(self) -> None:  # a study's and a sweep's base is a pair or KD run: this holds for them too
        if self.distillation.mode != "scratch" and not self.soft_labels_run_id:
            raise ValueError(f"mode {self.distillation.mode!r} needs soft_labels_run_id (run the soft_labels "
                             "entry point first)")

    @property
    def epochs(self) -> int:
        """The epochs this student trains (the origin's schedule when ``training.epochs`` is 0)."""
        return self.training.epochs or ORIGIN_EPOCHS[self.student.arch]

    def run_name(self, arm: str) -> str:
        """An arm run's name: student, seed, arm (``gru-32 s0 kd``), so compare headers, chart legends
        and the registry's source run tell the runs apart."""
        return f"{self.student.name} s{self.seed} {arm}"

    def flat(self) -> dict:
        """The flat form (params, ``config.json``), with the epochs resolved."""
        s, t, d = self.student, self.training, self.distillation
        return {"data": self.data, "soft_labels_run_id": self.soft_labels_run_id, "arch": s.arch, "hidden": s.hidden,
                "embedding_dim": s.embedding_dim, "vocab_size": s.vocab_size, "bidirectional": s.bidirectional,
                "bigram_buckets": s.bigram_buckets,
                "bag_ngrams": s.bag_ngrams, "bag_dim": s.bag_dim, "max_len": t.max_len, "epochs": self.epochs, "lr": t.lr,
                "lr_schedule": t.lr_schedule, "batch_size": t.batch_size, "seed": self.seed,
                "mode": d.mode, "temperature": d.temperature, "alpha": d.alpha, "hard_epochs": t.hard_epochs,
                "val_fraction": t.val_fraction, "teachers": format_teachers(d.teachers), "label_budget": t.label_budget}

    @classmethod
    def from_flat(cls, **flat) -> ArmConfig:
        """Parse the flat form (CLI options, ``config.json``); missing names take their defaults."""
        teachers = flat.get("teachers", "")
        return cls(
            data=flat.get("data", "sample"), soft_labels_run_id=flat.get("soft_labels_run_id", ""),
            seed=flat.get("seed", 0),
            student=StudentSpec(**{k: flat[k] for k in StudentSpec.__dataclass_fields__ if k in flat}),
            training=Training(**{k: flat[k] for k in Training.__dataclass_fields__ if k in flat}),
            distillation=Distillation(mode=flat.get("mode", "pair"), temperature=flat.get("temperature", 2.0),
                                      alpha=flat.get("alpha", 1.0),
                                      teachers=parse_teachers(teachers) if isinstance(teachers, str) else teachers))

    @classmethod
    def defaults(cls) -> dict:
        """The ``student`` command's options and defaults (epochs 0: the origin's)."""
        flat = {**cls(soft_labels_run_id="-").flat(), "soft_labels_run_id": "", "epochs": 0}
        del flat["val_fraction"]  # fixed: every stage carves the same validation split
        return flat


# ----------------------------------------------------------------------------- a study and a sweep


# Study fields added after studies had run: at their defaults they stay out of the key.
NEWER_FIELDS = {"teachers": "", "label_budget": 0, "bidirectional": False, "lr_schedule": "constant",
                "bigram_buckets": 0, "bag_ngrams": 2, "bag_dim": StudentSpec.bag_dim}


@dataclass(frozen=True)
class StudyConfig:
    """The ``study`` entry point: the base arm run, trained for every student of the grid and every seed."""

    base: ArmConfig
    grid: tuple[tuple[str, int], ...] = parse_grid(DEFAULT_GRID)
    seeds: int = 5
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1
    arms: tuple[str, ...] = ("scratch", "kd")  # kd_hard joins when base.training.hard_epochs is set
    workers: int = 2
    register: bool = True  # register the best student (by validation accuracy) in the model registry
    storage: str = ""  # an Optuna RDB URL: workers on several machines share the grid through it

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.workers < 0 or (self.workers == 0 and not self.storage):
            raise ValueError("seeds must be >= 1 and workers >= 1 (0 only with a storage that other workers join)")
        for arch, hidden in self.grid:  # every student of the grid, before any run opens
            try:
                replace(self.base.student, arch=arch, hidden=hidden)
            except ValueError as exc:
                raise ValueError(f"grid {format_grid(self.grid)!r}: {arch}:{hidden}: {exc}") from exc
        teachers = self.base.distillation.teachers
        if [a for a in self.arm_list() if not is_arm(a, teachers)] or "scratch" not in self.arms:
            raise ValueError(f"arms must include scratch and come from {list(ARMS)} or kd@NAME with NAME in "
                             f"--teachers; got {','.join(self.arms)!r} (teachers {format_teachers(teachers)!r})")

    def student(self, configuration: tuple[str, int], seed: int) -> ArmConfig:
        """The arm run of one student of the grid and one seed."""
        arch, hidden = configuration
        return replace(self.base, seed=seed, student=replace(self.base.student, arch=arch, hidden=hidden))

    def arm_list(self) -> tuple[str, ...]:
        """The arms of every seed pair; ``kd_hard`` joins when hard epochs are set."""
        extra = ("kd_hard",) if self.base.training.hard_epochs and "kd_hard" not in self.arms else ()
        return self.arms + extra

    def flat(self) -> dict:
        b, s, t, d = self.base, self.base.student, self.base.training, self.base.distillation
        return {"soft_labels_run_id": b.soft_labels_run_id, "data": b.data, "grid": format_grid(self.grid),
                "seeds": self.seeds, "first_seed": self.first_seed, "epochs": t.epochs,
                "finetune_hard_epochs": t.hard_epochs, "arms": ",".join(self.arms), "temperature": d.temperature,
                "alpha": d.alpha, "embedding_dim": s.embedding_dim, "vocab_size": s.vocab_size,
                "bidirectional": s.bidirectional, "bigram_buckets": s.bigram_buckets,
                "bag_ngrams": s.bag_ngrams, "bag_dim": s.bag_dim, "max_len": t.max_len, "lr": t.lr,
                "lr_schedule": t.lr_schedule,
                "batch_size": t.batch_size, "workers": self.workers, "register": self.register, "storage": self.storage,
                "teachers": format_teachers(d.teachers), "label_budget": t.label_budget}

    @classmethod
    def from_flat(cls, **flat) -> StudyConfig:
        arm = {k: v for k, v in flat.items() if k in ArmConfig.defaults()}
        if "finetune_hard_epochs" in flat:
            arm["hard_epochs"] = flat["finetune_hard_epochs"]
        fields = {k: flat[k] for k in ("seeds", "first_seed", "workers", "register", "storage") if k in flat}
        return cls(base=ArmConfig.from_flat(**arm), grid=parse_grid(flat.get("grid", DEFAULT_GRID)),
                   arms=parse_arms(flat.get("arms", "scratch,kd")), **fields)

    @classmethod
    def defaults(cls) -> dict:
        return {**cls(base=ArmConfig(soft_labels_run_id="-")).flat(), "soft_labels_run_id": ""}

    def key(self) -> str:
        """What makes two studies the same study: neither the number of workers nor the arms do, so a
        study run again with more arms trains only those. The teachers do: kd@linear of another linear
        teacher is another arm."""
        return self._hash(exclude=("workers", "register", "storage", "arms"))

    def legacy_key(self) -> str:
        """The key of studies started before arms could be added (it hashed the arms too)."""
        return self._hash(exclude=("workers", "register", "storage"))

    def _hash(self, exclude: tuple[str, ...]) -> str:
        fields = {k: v for k, v in self.flat().items() if k not in exclude}
        for newer, default in NEWER_FIELDS.items():  # studies from before these keep their key
            if fields[newer] == default:
                del fields[newer]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SweepConfig:
    """The ``sweep`` entry point: the base KD run, retrained at each trial's temperature (and alpha)."""

    base: ArmConfig
    n_trials: int = 20
    timeout: float = 0.0  # seconds; 0 = none
    sampler_seed: int = 0
    t_min: float = 1.0
    t_max: float = 20.0
    sweep_alpha: bool = False  # also search alpha in [0, 1]; otherwise alpha = 1 (soft targets only)
    storage: str = "sqlite:///optuna-sweep.db"
    study_name: str = ""  # default: derived from the student and soft labels (``name``)
    workers: int = 1  # local worker processes; 0: queue the trials and wait for sweep-workers

    def __post_init__(self) -> None:
        if not 0 < self.t_min < self.t_max:
            raise ValueError(f"need 0 < t_min < t_max, got {self.t_min}, {self.t_max}")
        if self.n_trials < 1 or self.timeout < 0 or self.workers < 0:
            raise ValueError("n_trials must be >= 1, timeout >= 0 and workers >= 0")

    @property
    def name(self) -> str:
        """The Optuna study's name."""
        s = self.base.student
        return self.study_name or f"kd_imdb-sweep-{s.arch}-{s.hidden}-{self.base.soft_labels_run_id[:8]}"

    def student(self, temperature: float, alpha: float) -> ArmConfig:
        """The KD run of one trial."""
        return replace(self.base, distillation=replace(self.base.distillation, temperature=temperature, alpha=alpha))

    def flat(self) -> dict:
        b, s, t = self.base, self.base.student, self.base.training
        return {"soft_labels_run_id": b.soft_labels_run_id, "data": b.data, "arch": s.arch, "hidden": s.hidden,
                "n_trials": self.n_trials, "timeout": self.timeout, "sampler_seed": self.sampler_seed,
                "t_min": self.t_min, "t_max": self.t_max, "sweep_alpha": self.sweep_alpha, "seed": b.seed,
                "epochs": t.epochs, "embedding_dim": s.embedding_dim, "vocab_size": s.vocab_size,
                "bidirectional": s.bidirectional, "bigram_buckets": s.bigram_buckets,
                "bag_ngrams": s.bag_ngrams, "bag_dim": s.bag_dim, "max_len": t.max_len, "lr": t.lr,
                "lr_schedule": t.lr_schedule,
                "batch_size": t.batch_size, "storage": self.storage, "study_name": self.name, "workers": self.workers}

    @classmethod
    def from_flat(cls, **flat) -> SweepConfig:
        arm = {"hidden": 32, **{k: v for k, v in flat.items() if k in ArmConfig.defaults()}, "mode": "kd"}
        fields = {k: flat[k] for k in ("n_trials", "timeout", "sampler_seed", "t_min", "t_max", "sweep_alpha",
                                       "storage", "study_name", "workers") if k in flat}
        return cls(base=ArmConfig.from_flat(**arm), **fields)

    @classmethod
    def defaults(cls) -> dict:
        flat = cls.from_flat(soft_labels_run_id="-").flat()
        return {**flat, "soft_labels_run_id": "", "study_name": ""}
