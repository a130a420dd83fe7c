"""Shared fixtures: a throwaway copy of the project with its own runs folder and MLflow store."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
MLOPS_NB = [str(Path(sys.executable).parent / 'mlops-nb')]  # the console script, as a user runs it


def make_project(dest: Path, max_rows: int = 2000) -> Path:
    "A project folder at `dest`: the repo's settings.ini (on a small sample) and stage notebooks"
    shutil.copytree(ROOT / 'notebooks' / 'stages', dest / 'notebooks' / 'stages')
    text = (ROOT / 'settings.ini').read_text()
    text = text.replace('max_rows = 0', f'max_rows = {max_rows}').replace('n_boot = 200', 'n_boot = 50')
    (dest / 'settings.ini').write_text(text)
    return dest


def batch_without(project: Path, column: str = 'DEYE'):
    "`-p` arguments of a run on the first run's snapshot as a CSV lacking `column`: validate stops on it"
    snapshot = sorted((project / 'runs').glob('*/artifacts/01_ingest/data.parquet'))[0]
    path = project / f'batch_without_{column}.csv'
    pd.read_parquet(snapshot).drop(columns=column).to_csv(path, index=False)
    return ['-p', f'data.source={path.name}']


def cli(project: Path, *args, timeout=600):
    "Run `mlops-nb` on `project` in a fresh process, as a user would"
    # mlflow.set_tracking_uri/set_registry_uri export MLFLOW_* variables: a test's store must not leak into the next
    env = {**{k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}, 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run([*MLOPS_NB, '--settings', str(project / 'settings.ini'), *args], cwd=project,
                          capture_output=True, text=True, timeout=timeout, env=env)


def manifests(project: Path):
    return [json.loads(p.read_text()) for p in sorted((project / 'runs').glob('*/manifest.json'))]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A project with one completed training run: `(project, completed process, manifest)`"
    project = make_project(tmp_path_factory.mktemp('project'))
    res = cli(project, 'run', '--approve-as', 'tester')
    assert res.returncode == 0, res.stdout + res.stderr
    return project, res, manifests(project)[-1]


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)
