"""Hygiene: library notebooks pass their own tests and match the package; stage notebooks match their declarations."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, make_project
from mlops_nb.core.stage import BUILTIN, TEMPLATES, find_stages, parse_parameters

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_library_notebook_tests_pass():
    res = subprocess.run([str(BIN / 'nbdev-test')], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_the_dependency_rule_holds():
    "pyproject.toml's import-linter contracts: the layers, and no cycle, imports inside functions counted"
    res = subprocess.run([str(BIN / 'lint-imports')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.parametrize('command', [['check'], ['format', '--check']])
def test_ruff_finds_nothing(command):
    "pyproject.toml's [tool.ruff] over the package, the lib notebooks, tests and benchmarks"
    res = subprocess.run(
        [str(BIN / 'ruff'), *command, '--no-cache', '.'], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_export_leaves_the_package_unchanged(tmp_path):
    for name in ('pyproject.toml', 'settings.ini', 'README.md'):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / 'notebooks', tmp_path / 'notebooks')
    shutil.copytree(ROOT / 'mlops_nb', tmp_path / 'mlops_nb', ignore=shutil.ignore_patterns('__pycache__', 'datasets'))
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    res = subprocess.run(
        [str(BIN / 'nbdev-export')], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    changed = sorted(str(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert changed == [], f'nbdev-export changed {changed}: run nbdev-export and commit'


def test_every_template_is_a_stage_and_the_project_uses_the_templates():
    assert (ROOT / 'notebooks' / 'stages').resolve() == TEMPLATES.resolve(), (
        'one copy of each stage notebook in the repository'
    )
    stages = find_stages(ROOT)
    assert sorted(stages) == sorted(BUILTIN), 'every template is a built-in stage with its inputs and outputs'
    for s in stages.values():
        path = TEMPLATES / s.notebook
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].cell_type == 'markdown' and nb.cells[0].source.startswith('# ')
        assert 'parameters' in nb.cells[1].metadata.get('tags', []), 'the parameters cell follows the title'
        assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), (
            f'{s.notebook} is committed without outputs'
        )
        assert all(p.help for p in s.params), f'{s.notebook}: every parameter has its help'


def test_the_parameters_cell_reads_as_papermill_reads_it():
    "Our parser (no papermill import: 2-3 s a run) and papermill agree on every template's parameters"
    import papermill as pm

    for nb in sorted(TEMPLATES.glob('*.ipynb')):
        ours = parse_parameters(nb)
        theirs = pm.inspect_notebook(str(nb))
        assert [p.name for p in ours] == list(theirs), nb.name
        for p in ours:
            t = theirs[p.name]
            assert (p.type.__name__, repr(p.default), p.help) == (t['inferred_type_name'], t['default'], t['help']), (
                nb.name,
                p.name,
            )


def test_importing_the_package_is_cheap():
    code = (
        'import sys, mlops_nb.cli, mlops_nb.pipeline.runner, mlops_nb.registry.tracking\n'
        'heavy = [m for m in ("mlflow", "papermill", "sklearn", "matplotlib") if m in sys.modules]\n'
        'assert not heavy, heavy'
    )
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_stage_notebooks_run_top_to_bottom_with_their_defaults(tmp_path):
    "As in JupyterLab: no parameters injected, working directory notebooks/stages, the project's own store"
    import papermill as pm
    from mlops_nb.core.project import load_project
    from mlops_nb.core.stage import TRAINING
    from mlops_nb.registry.tracking import client

    project = make_project(tmp_path)
    stages_dir = project / 'notebooks' / 'stages'

    def run(name):
        s = find_stages(project)[name]
        pm.execute_notebook(
            str(stages_dir / s.notebook),
            str(tmp_path / s.notebook),
            cwd=str(stages_dir),
            progress_bar=False,
            kernel_name='python3',
        )

    for name in TRAINING:
        run(name)
    interactive = project / 'runs' / 'interactive'
    assert (interactive / 'artifacts/07_register/registration.json').is_file()
    assert (project / 'mlflow.db').is_file(), "the default tracking URI is the project's settings.ini"
    # the monitor notebook watches a champion: the one just registered, as if approved
    client(load_project(project / 'settings.ini').tracking_uri).set_registered_model_alias(
        'acs-employment', 'champion', '1'
    )
    run('monitor')
    assert (interactive / 'artifacts/08_monitor/monitor.json').is_file()
    # the replay notebook (a minute with its defaults) runs through `mlops-nb replay` in test_monitor.py


CHECK = re.compile(
    r'\b(test_eq|test_ne|test_close|test_fail|test_is|test_warns|test_stdout|test_shuffled|test_eq_type)\(|\bassert\b'
)


def nbdev_style_problems(nb_path: Path):
    "Export cells of `nb_path` not written as nbdev is: over 80 lines, two definitions, or no example and check after"
    cells = nbformat.read(nb_path, as_version=4).cells
    for i, c in enumerate(cells):
        if c.cell_type != 'code' or not re.match(r'#\|\s*export\b', c.source):
            continue
        where = f'{nb_path.name} cell {c.get("id")}'
        if len(c.source.splitlines()) > 80:
            yield f'{where}: {len(c.source.splitlines())} lines (at most 80)'
        defs = re.findall(r'^(?:async def|def|class) (\w+)', c.source, re.M)
        if len(defs) > 1:
            yield f'{where}: defines {", ".join(defs)} (one function or class a cell)'
        if not defs or defs[0].startswith('_'):
            continue
        nxt = next((d for d in cells[i + 1 :] if d.cell_type == 'code'), None)
        body = (
            ''
            if nxt is None
            else '\n'.join(l for l in nxt.source.splitlines() if not re.match(r'\s*(from|import) ', l))
        )
        if nxt is None or re.match(r'#\|\s*export\b', nxt.source) or not CHECK.search(body):
            yield f'{where}: {defs[0]} has no example and check after it'


def test_library_notebooks_are_written_as_nbdev_is(tmp_path):
    "One function or class an export cell, at most 80 lines, an example and check after it; modules under 600 lines"
    bad = tmp_path / 'bad.ipynb'
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell('#| export\ndef f():\n    return 1\ndef g():\n    return 2'),
                nbformat.v4.new_code_cell('from fastcore.test import test_eq\nf()'),
            ]
        ),
        bad,
    )
    assert [p.split(': ', 1)[1] for p in nbdev_style_problems(bad)] == [
        'defines f, g (one function or class a cell)',
        'f has no example and check after it',
    ]
    problems = [p for nb in sorted((ROOT / 'notebooks' / 'lib').rglob('*.ipynb')) for p in nbdev_style_problems(nb)]
    assert problems == [], '\n'.join(problems)
    long = [
        f'{p.relative_to(ROOT)}: {n} lines'
        for p in (ROOT / 'mlops_nb').rglob('*.py')
        if p.name != '_modidx.py' and (n := len(p.read_text().splitlines())) > 600
    ]
    assert long == [], long
