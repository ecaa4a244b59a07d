"""Packaging: pyproject, conda.yaml, constraints.txt and MLproject agree with each other and with the CLI."""
from __future__ import annotations

import dataclasses
import inspect
import shlex
import tomllib
from importlib.metadata import version

import click
import pytest
import yaml
from conftest import ROOT, run_cli
from mlflow.projects._project_spec import load_project
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from kd_imdb.cli import main

TORCH_PIN = "2.13.0"
SUBCOMMANDS = {"teacher", "soft-labels", "student", "demo"}


def requirement_key(text: str) -> tuple[str, str]:
    req = Requirement(text)
    return canonicalize_name(req.name), str(req.specifier)


@pytest.fixture(scope="module")
def pyproject_deps() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(requirement_key(d) for d in deps)


@pytest.fixture(scope="module")
def conda_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1
    return pip[0]


@pytest.fixture(scope="module")
def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not an == pin"
            pins[canonicalize_name(name)] = pinned
    return pins


@pytest.fixture(scope="module")
def project():
    return load_project(str(ROOT))


# --- dependencies ------------------------------------------------------------------------------------


def test_constraints_pin_torch(constraints):
    assert constraints["torch"] == TORCH_PIN
    assert Version(version("torch")).base_version == TORCH_PIN  # the installed build is the pinned one


def test_conda_pip_deps_equal_pyproject_deps(pyproject_deps, conda_pip, constraints):
    assert "-e ." in conda_pip
    torch_lines = [d for d in conda_pip if d != "-e ." and canonicalize_name(Requirement(d).name) == "torch"]
    others = dict(requirement_key(d) for d in conda_pip if d != "-e ." and d not in torch_lines)
    assert len(others) == len(conda_pip) - 1 - len(torch_lines)  # no duplicates
    expected = {name: spec for name, spec in pyproject_deps.items() if name != "torch"}
    assert others == expected
    # torch: pinned exactly to constraints.txt, and that pin satisfies pyproject's own torch requirement
    assert torch_lines == [f"torch=={constraints['torch']}"]
    assert Requirement(f"torch{pyproject_deps['torch']}").specifier.contains(constraints["torch"])


def test_constraints_satisfy_pyproject(pyproject_deps, constraints):
    """Every pinned version in constraints.txt satisfies the pyproject requirement on that package."""
    for name, spec in pyproject_deps.items():
        assert name in constraints, name
        assert Requirement(f"{name}{spec}").specifier.contains(constraints[name], prereleases=True), name


def test_conda_env_is_the_mlproject_env(project):
    assert yaml.safe_load((ROOT / "MLproject").read_text())["conda_env"] == "conda.yaml"
    assert project.env_config_path == str(ROOT / "conda.yaml")
    assert yaml.safe_load((ROOT / "conda.yaml").read_text())["name"] == project.name == "kd_imdb"


# --- MLproject entry points against the click CLI ----------------------------------------------------

REQUIRED_ENTRY_POINTS = {"teacher", "soft_labels", "student", "demo"}
ENTRY_POINTS = sorted(yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"])
PLACEHOLDER_RUN_ID = "0" * 32  # for run-id parameters without a usable default


def test_every_stage_is_an_entry_point(project):
    assert REQUIRED_ENTRY_POINTS <= set(project._entry_points)
    assert SUBCOMMANDS <= set(main.commands)


def same_value(parsed, default) -> bool:
    if default == "none":  # an empty option (cli.none_means_empty): mlflow run would log "" as ''
        return parsed == ""
    if isinstance(parsed, bool):
        return str(default).lower() == str(parsed).lower()
    if isinstance(parsed, (int, float)):
        return float(default) == parsed
    return str(default) == parsed


def parse(subcommand: str, argv: list[str]) -> click.Context:
    parent = main.make_context("kd-imdb", [subcommand], resilient_parsing=True)
    command = main.commands[subcommand]
    return command.make_context(subcommand, argv, parent=parent, resilient_parsing=False)


def mlflow_argv(ep) -> list[str]:
    """The command as ``mlflow run`` builds it: defaults substituted, shell-quoted, then split."""
    given = {k: PLACEHOLDER_RUN_ID for k, p in ep.parameters.items() if p.default is None}
    command = ep.compute_command(given, None)
    params = {k: shlex.quote(str(given.get(k, p.default))) for k, p in ep.parameters.items()}
    assert command == ep.command.format(**params)
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "kd_imdb.cli"]
    assert argv[3] in main.commands, f"entry point {ep.name} calls unknown subcommand {argv[3]!r}"
    return argv


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_point_command_parses_with_defaults(project, entry):
    ep = project.get_entry_point(entry)
    argv = mlflow_argv(ep)
    assert argv[3] == entry.replace("_", "-")
    ctx = parse(argv[3], argv[4:])  # raises click.UsageError on an unknown option or a bad value
    assert len([a for a in argv[4:] if a.startswith("--")]) == len(ep.parameters)
    # MLproject's defaults are the CLI's defaults
    command = main.commands[argv[3]]
    for opt in command.params:
        if isinstance(opt, click.Option) and not opt.required:
            assert ctx.params[opt.name] == opt.type_cast_value(ctx, opt.get_default(ctx)), opt.name
    for name, param in ep.parameters.items():
        if param.default is not None:
            assert same_value(ctx.params[name], param.default), (name, ctx.params[name], param.default)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_point_params_are_option_names(project, entry):
    """MLflow logs the entry point's parameter names; the code logs its option/config names: the same."""
    ep = project.get_entry_point(entry)
    command = main.commands[mlflow_argv(ep)[3]]
    options = {p.name for p in command.params if isinstance(p, click.Option)}
    assert set(ep.parameters) == options
    # and each placeholder feeds the option of the same name
    argv = shlex.split(ep.command)
    for i, token in enumerate(argv):
        if token.startswith("--"):
            opt = next(p for p in command.params if token in p.opts)
            assert argv[i + 1] == "{" + opt.name + "}", token


def config_class(subcommand: str):
    """The dataclass (or function) a subcommand hands its options to."""
    import importlib

    if subcommand == "demo":
        from kd_imdb.demo import run

        return run
    module, name = {"teacher": ("kd_imdb.teacher", "TeacherConfig"),
                    "soft-labels": ("kd_imdb.soft_labels", "SoftLabelsConfig"),
                    "student": ("kd_imdb.config", "ArmConfig"),
                    "study": ("kd_imdb.config", "StudyConfig"),
                    "study-worker": ("kd_imdb.study", "join"),
                    "sweep": ("kd_imdb.config", "SweepConfig"),
                    "sweep-worker": ("kd_imdb.sweep", "join"),
                    "confirm": ("kd_imdb.sweep", "confirm"),
                    "linear-teacher": ("kd_imdb.linear_teacher", "LinearTeacherConfig"),
                    "ensemble-labels": ("kd_imdb.ensemble", "ensemble")}[subcommand]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_entry_point_params_are_config_fields(project, entry):
    """The CLI hands its options to the stage's config as keyword arguments: the names must be fields,
    and MLflow's parameter names must be too (the code logs ``asdict(config)``)."""
    ep = project.get_entry_point(entry)
    argv = mlflow_argv(ep)
    target = config_class(argv[3])
    kwargs = dict(parse(argv[3], argv[4:]).params)
    for key, value in kwargs.items():  # a run id is needed by some stages' validation
        if key.endswith("run_id") and not value:
            kwargs[key] = PLACEHOLDER_RUN_ID
    if hasattr(target, "from_flat"):  # a nested config: its flat form is what the CLI hands it
        fields = set(target.defaults())
        assert set(kwargs) <= fields, f"{argv[3]}: options {sorted(set(kwargs) - fields)} are not config fields"
        assert set(ep.parameters) <= fields
        target.from_flat(**kwargs)  # what the CLI does; validation passes on the defaults
    elif dataclasses.is_dataclass(target):
        fields = {f.name for f in dataclasses.fields(target)}
        assert set(kwargs) <= fields, f"{argv[3]}: options {sorted(set(kwargs) - fields)} are not config fields"
        assert set(ep.parameters) <= fields
        target(**kwargs)  # what the CLI does; validation passes on the defaults
    else:
        assert set(kwargs) <= set(inspect.signature(target).parameters)
        inspect.signature(target).bind(**kwargs)


def test_bad_option_value_is_a_usage_error(project):
    """The check above is real: click refuses an option the subcommand lacks, or a bad value."""
    with pytest.raises(click.NoSuchOption):
        parse("student", ["--no-such-option", "1"])
    with pytest.raises(click.BadParameter):
        parse("student", ["--epochs", "1.5"])


def test_cli_help_lists_subcommands():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("Commands:", 1)[1].splitlines()
    listed = {line.split()[0] for line in lines if line.strip()}
    assert SUBCOMMANDS <= listed
    assert listed == set(main.commands)


def test_modules_import_only_the_floors_below_them():
    """README's layout lists the package bottom up; every in-package import (at module top or inside a
    function) must name a module listed before the importer, so data flows one way and there is no cycle."""
    import ast
    import re

    order = re.findall(r"^kd_imdb/(\w+)\.py", (ROOT / "README.md").read_text(), flags=re.M)
    modules = sorted(p.stem for p in (ROOT / "kd_imdb").glob("*.py") if p.stem != "__init__")
    assert sorted(order) == modules, "README's layout must list every module once"
    rank = {name: i for i, name in enumerate(order)}
    upward = []
    for name in order:
        tree = ast.parse((ROOT / "kd_imdb" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "kd_imdb":
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kd_imdb."):
                targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("kd_imdb.")]
            else:
                continue
            upward += [f"{name} -> {t}" for t in targets if t in rank and rank[t] >= rank[name]]
    assert upward == []


def test_only_the_command_line_prints():
    """Library code returns tables and logs; ``cli.py`` alone writes to the console."""
    import re

    printing = [p.name for p in (ROOT / "kd_imdb").glob("*.py")
                if p.name != "cli.py" and re.search(r"\bclick\.echo\(|^\s*print\(", p.read_text(), flags=re.M)]
    assert printing == []


def test_the_tests_mirror_the_package():
    """Every module of kd_imdb has its tests/test_<module>.py."""
    modules = {p.stem for p in (ROOT / "kd_imdb").glob("*.py") if p.stem != "__init__"}
    assert sorted(m for m in modules if not (ROOT / "tests" / f"test_{m}.py").exists()) == []
