"""Hygiene: library notebooks pass their own tests and match the package; stage notebooks match their declarations."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from conftest import ROOT, make_project
from mlops_nb.stages import STAGES, check_notebook

BIN = Path(sys.executable).parent


def test_library_notebook_tests_pass():
    res = subprocess.run([str(BIN / 'nbdev-test')], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_export_leaves_the_package_unchanged(tmp_path):
    for name in ('pyproject.toml', 'settings.ini', 'README.md'):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / 'notebooks', tmp_path / 'notebooks')
    shutil.copytree(ROOT / 'mlops_nb', tmp_path / 'mlops_nb', ignore=shutil.ignore_patterns('__pycache__', 'datasets'))
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    res = subprocess.run([str(BIN / 'nbdev-export')], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    changed = sorted(str(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    assert changed == [], f'nbdev-export changed {changed}: run nbdev-export and commit'


def test_every_stage_notebook_is_declared_and_matches():
    on_disk = sorted(p.name for p in (ROOT / 'notebooks' / 'stages').glob('*.ipynb'))
    assert on_disk == sorted(s.notebook for s in STAGES)
    for s in STAGES:
        path = ROOT / 'notebooks' / 'stages' / s.notebook
        assert check_notebook(s, path) == []
        nb = nbformat.read(path, as_version=4)
        assert nb.cells[0].cell_type == 'markdown' and nb.cells[0].source.startswith('# ')
        assert 'parameters' in nb.cells[1].metadata.get('tags', []), 'the parameters cell follows the title'
        assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), f'{s.notebook} is committed without outputs'


def test_importing_the_package_is_cheap():
    code = ('import sys, mlops_nb.cli, mlops_nb.runner, mlops_nb.tracking\n'
            'heavy = [m for m in ("mlflow", "papermill", "sklearn", "matplotlib") if m in sys.modules]\n'
            'assert not heavy, heavy')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_stage_notebooks_run_top_to_bottom_with_their_defaults(tmp_path):
    "As in JupyterLab: no parameters injected, working directory notebooks/stages, the project's own store"
    import papermill as pm
    from mlops_nb.project import load_project
    from mlops_nb.stages import TRAINING, get_stage
    from mlops_nb.tracking import client
    project = make_project(tmp_path)
    stages_dir = project / 'notebooks' / 'stages'
    def run(name):
        s = get_stage(name)
        pm.execute_notebook(str(stages_dir / s.notebook), str(tmp_path / s.notebook), cwd=str(stages_dir),
                            progress_bar=False, kernel_name='python3')
    for name in TRAINING: run(name)
    interactive = project / 'runs' / 'interactive'
    assert (interactive / 'artifacts/07_register/registration.json').is_file()
    assert (project / 'mlflow.db').is_file(), "the default tracking URI is the project's settings.ini"
    # the monitor notebook watches a champion: the one just registered, as if approved
    client(load_project(project / 'settings.ini').tracking_uri).set_registered_model_alias('acs-employment', 'champion', '1')
    run('monitor')
    assert (interactive / 'artifacts/08_monitor/monitor.json').is_file()
    # the replay notebook (a minute with its defaults) runs through `mlops-nb replay` in test_monitor.py
