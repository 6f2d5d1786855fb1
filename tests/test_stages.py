"""The stage table (sldata/stages.py) against the code and both engines.

* Each stage's ``code`` covers every module its command imports: the imports of the command's
  handler in ``sldata/cli.py`` / ``sltrain/cli.py`` (and of the cli functions it calls), followed
  recursively through ``sldata`` and ``sltrain`` (module-level and function-level imports alike).
* ``dvc.yaml`` lists exactly the table's code and params for each stage, and each Snakemake rule
  gets exactly the table's params and code (``snakemake --list-params-changes`` style, read from
  the parsed workflow).
* Runtime knobs (``pose.workers``, threads) are in no stage's params; a ``models.vtn`` value is in
  ``train_hands`` only.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, default_params
from sldata.stages import RUNTIME_KEYS, STAGES, code_files, param_keys, stage_params

PACKAGES = ("sldata", "sltrain")
REGISTERED = re.compile(r"^(sldata|sltrain)(\.\w+)+:\w+$")  # "module:attribute" entries of the registries
# Modules every command imports that cannot change what a stage writes: the command-line wrappers,
# params loading and validation (the values themselves are the stage's params), this table and
# progress logging.
NOT_STAGE_CODE = frozenset({
    "sldata/cli.py", "sltrain/cli.py", "sldata/__main__.py", "sltrain/__main__.py", "sldata/params.py",
    "sldata/stages.py", "sldata/progress.py",
})


def module_file(name: str) -> Path | None:
    """The file of module ``name`` in this repository (a package's ``__init__.py``), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO_ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def imported_modules(nodes: list[ast.AST], package: str) -> set[str]:
    """Modules imported anywhere in ``nodes`` (``from a import b`` counts ``a.b`` when that is a module)."""
    found: set[str] = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(alias.name for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - sub.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in sub.names if module_file(f"{base}.{alias.name}"))
            elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and REGISTERED.match(sub.value):
                found.add(sub.value.partition(":")[0])  # a registry entry, imported when used
    return {m for m in found if module_file(m)}


@cache
def module_closure(name: str) -> frozenset[str]:
    """Repository files reached from module ``name`` by following imports."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        path = module_file(mod)
        if path is None or (rel := path.relative_to(REPO_ROOT).as_posix()) in seen:
            continue
        seen.add(rel)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        todo.extend(imported_modules([ast.parse(path.read_text())], package))
        # Importing a.b.c runs a/b/__init__.py first (the top-level packages' only hold the version).
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))
    return frozenset(seen)


def handler_imports(package: str, command: str) -> set[str]:
    """Modules the handler of ``python -m <package> <command>`` imports, with the cli helpers it calls."""
    cli = REPO_ROOT / package / "cli.py"
    tree = ast.parse(cli.read_text())
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    name = "_cmd_" + command.replace("-", "_")
    assert name in functions, f"{cli}: no handler {name} for command {command!r}"
    bodies, todo = {}, [name]
    while todo:
        fn = todo.pop()
        if fn in bodies:
            continue
        bodies[fn] = functions[fn]
        todo.extend(c.func.id for c in ast.walk(functions[fn]) if isinstance(c, ast.Call)
                    and isinstance(c.func, ast.Name) and c.func.id in functions)
    return imported_modules(list(bodies.values()), package)


def stage_imports(stage: str) -> set[str]:
    """Every repository file the stage's command imports, less :data:`NOT_STAGE_CODE`."""
    files: set[str] = set()
    for mod in handler_imports(*STAGES[stage].command):
        files |= module_closure(mod)
    return files - NOT_STAGE_CODE


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_covers_every_module_its_command_imports(stage: str) -> None:
    declared = set(code_files(stage))
    missing = sorted(stage_imports(stage) - declared)
    assert not missing, f"sldata/stages.py: stage {stage!r} imports {missing} but its code does not list them"
    absent = [entry for entry in STAGES[stage].code if not (REPO_ROOT / entry).exists()]
    assert not absent, f"sldata/stages.py: stage {stage!r} lists code that does not exist: {absent}"


def test_the_import_walk_sees_lazy_and_nested_imports() -> None:
    """The walk is not vacuous: pose reaches the estimator through extract, train the models package."""
    assert {"sldata/pose/extract.py", "sldata/pose/estimator.py", "sldata/pose/skeleton.py"} <= stage_imports("pose")
    assert {"sltrain/models/factory.py", "sltrain/models/vtn.py", "sltrain/checkpoint.py"} <= stage_imports("train")


def dvc_stages() -> dict:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_has_every_stage_with_the_tables_code_and_params() -> None:
    stages = dvc_stages()
    assert set(stages) == set(STAGES)
    for name, stage in stages.items():
        code = [d for d in stage.get("deps", []) if d.split("/")[0] in PACKAGES]
        assert sorted(code) == sorted(STAGES[name].code), f"dvc.yaml: {name}.deps code differs from sldata/stages.py"
        assert stage.get("params", []) == param_keys(name), f"dvc.yaml: {name}.params differs from sldata/stages.py"
        package, command = STAGES[name].command
        assert f"python -m {package} {command} " in stage["cmd"] + " ", f"dvc.yaml: {name} does not run its command"


def test_runtime_knobs_and_other_models_are_no_stages_params() -> None:
    keys = {name: param_keys(name) for name in STAGES}
    for name, listed in keys.items():
        assert not RUNTIME_KEYS & set(listed), name
        assert "pose.workers" not in listed and "models" not in listed
    assert [n for n, listed in keys.items() if "models.vtn" in listed] == ["train_hands"]
    assert "pose.frame_step" in keys["pose"] and "pose.workers" not in keys["pose"]
    values = stage_params(default_params(), "pose")
    assert set(values) == {"shards", "pose"} and "workers" not in values["pose"]


def snakemake_rules() -> dict[str, tuple[dict, list[str]]]:
    """``rule -> (params, code inputs)`` of the parsed Snakefile (via the Snakemake API, no jobs run)."""
    script = (
        "import json, sys\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, ResourceSettings\n"
        "from pathlib import Path\n"
        "with SnakemakeApi() as api:\n"
        "    wf = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(),\n"
        "                      snakefile=Path('Snakefile'))\n"
        "    workflow = wf._workflow\n"
        "    out = {}\n"
        "    for rule in workflow.rules:\n"
        "        p = {k: v for k, v in rule.params.items() if not callable(v)}\n"
        "        code = [str(f) for f in rule.input if str(f).startswith(('sldata/', 'sltrain/'))]\n"
        "        out[rule.name] = [p, code]\n"
        "    print(json.dumps(out))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {k: (v[0], v[1]) for k, v in __import__("json").loads(result.stdout.strip().splitlines()[-1]).items()}


def test_each_snakemake_rule_has_the_tables_params_and_code() -> None:
    rules = snakemake_rules()
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for name in STAGES:
        rule_params, code = rules[name]
        expected = stage_params(params, name)
        assert {k: v for k, v in rule_params.items() if k in expected} == expected, name
        assert set(rule_params) & set(params) == set(expected), f"{name}: a section beyond the stage's params"
        assert sorted(code) == code_files(name), name
