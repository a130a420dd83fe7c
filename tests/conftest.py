"""Shared fixtures: a throwaway copy of the project with its own runs folder and MLflow store."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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
    "Run `mlops-nb` on `project` in a fresh process, as a user would; past `timeout`, fail with where it was stuck"
    # mlflow.set_tracking_uri/set_registry_uri export MLFLOW_* variables: a test's store must not leak into the next
    env = {**{k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}, 'PYTHONWARNINGS': 'ignore'}
    cmd = [*MLOPS_NB, '--settings', str(project / 'settings.ini'), *args]
    with subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = _stop_stuck(proc, project)
            pytest.fail(
                f'mlops-nb {" ".join(args)} took over {timeout} s\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-8000:]}'
                + _newest_run_logs(project),
                pytrace=False,
            )
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _stop_stuck(proc, project: Path):
    "Ask `proc`, its descendants and the kernels of `project`'s runs for their stacks (`kill -USR1`), then kill them"
    import psutil

    kernels = [psutil.Process(pid) for pid in working_in(project / 'runs')]  # forked by the warm process
    tree = [*psutil.Process(proc.pid).children(recursive=True), *kernels, psutil.Process(proc.pid)]
    for p in tree:
        try:
            p.send_signal(signal.SIGUSR1)
        except psutil.Error:
            pass  # ended meanwhile
    time.sleep(2)
    for p in tree:
        try:
            p.kill()
        except psutil.Error:
            pass
    return proc.communicate()


def working_in(folder: Path):
    "Pids of the processes working in `folder` or below it (a run's kernels, wherever they were forked)"
    folder, found = folder.resolve(), []
    for cwd in Path('/proc').glob('[0-9]*/cwd'):
        try:
            if Path(os.readlink(cwd)).is_relative_to(folder):
                found.append(int(cwd.parent.name))
        except OSError:
            continue  # ended, or another user's
    return found


def _newest_run_logs(project: Path):
    "The stage statuses and the tail of every log of the newest run folder of `project`"
    runs = sorted(d for d in (project / 'runs').glob('2*') if d.is_dir())
    if not runs:
        return '\n(no run folder)'
    res = [f'\n--- {runs[-1].name}']
    if (runs[-1] / 'manifest.json').is_file():
        m = json.loads((runs[-1] / 'manifest.json').read_text())
        res += [f'{r["name"]}: {r.get("status")} {r.get("error") or ""}' for r in m.get('stages', [])]
    for log in sorted((runs[-1] / 'logs').glob('*.log')):
        res += [f'--- {log.name}', log.read_text(errors='replace')[-4000:]]
    return '\n'.join(res)


def manifests(project: Path):
    return [json.loads(p.read_text()) for p in sorted((project / 'runs').glob('*/manifest.json'))]


@pytest.fixture(scope='session', autouse=True)
def _warm_process():
    "A warm process of this test session's own (per worker): its runs fork from it as a user's would; it leaves at the end"
    import tempfile

    folder = tempfile.mkdtemp(prefix='mnbw-')  # short: a Unix socket's path has a limit
    os.environ['MLOPS_NB_WARM_DIR'] = folder
    yield folder
    del os.environ['MLOPS_NB_WARM_DIR']
    shutil.rmtree(folder, ignore_errors=True)  # its socket gone, the warm process leaves once idle


@pytest.fixture(scope='session')
def _approved_once(tmp_path_factory):
    "This worker's project with one run approved by 'tester', made once, and a copy of it as it was then"
    home = make_project(tmp_path_factory.getbasetemp() / 'approved')
    res = cli(home, 'run', '--approve-as', 'tester')
    assert res.returncode == 0, res.stdout + res.stderr
    pristine = home.with_name('approved.pristine')
    shutil.copytree(home, pristine, symlinks=True)
    return {'home': home, 'pristine': pristine, 'res': res, 'lent': False}


@pytest.fixture(scope='module')
def approved(_approved_once):
    """A project with one run approved by 'tester': `(project, completed process)`. Made once per test worker, and put
    back as it was for each module, at the same path, because its MLflow store records absolute paths. A worker runs
    one module at a time (`--dist loadfile`), so a module has it to itself."""
    once = _approved_once
    if once['lent']:
        shutil.rmtree(once['home'])
        shutil.copytree(once['pristine'], once['home'], symlinks=True)
    once['lent'] = True
    return once['home'], once['res']


@pytest.fixture(scope='module')
def trained(approved):
    "A project with one completed training run, approved: `(project, completed process, manifest)`"
    project, res = approved
    return project, res, manifests(project)[-1]


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)
