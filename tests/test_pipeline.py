"""The whole pipeline through the CLI, on a small sample, into a temporary project and MLflow store."""

import json
import re
import signal
import subprocess
import sys
import time

import nbformat
import pandas as pd
import pytest

from conftest import MLOPS_NB, batch_without, cli, manifests
from mlops_nb.core.basics import sha256_path

STAGES = ['ingest', 'validate', 'features', 'train', 'evaluate', 'audit', 'register']


def tracking_uri(project):
    return f'sqlite:///{project.resolve()}/mlflow.db'


def champion_version(project):
    from mlops_nb.registry.tracking import alias_version, client

    v = alias_version(client(tracking_uri(project)), 'acs-employment')
    return None if v is None else str(v.version)


def break_notebook(project, notebook, code):
    "Append a cell running `code` to a stage notebook of `project`; return a function that restores it"
    path = project / 'notebooks' / 'stages' / notebook
    original = path.read_text()
    nb = nbformat.reads(original, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(code))
    nbformat.write(nb, path)
    return lambda: path.write_text(original)


def test_run_prints_progress_and_summary(trained):
    project, res, m = trained
    lines = res.stdout.splitlines()
    for i, name in enumerate(STAGES, 1):
        assert any(re.match(rf'\[{i}/7\] {name}\s+completed\s+[\d.]+ s$', l) for l in lines), res.stdout
    assert f'run {m["run_id"]} completed' in res.stdout
    assert 'acs-employment version 1, approved by tester: champion' in res.stdout
    assert re.search(r'metrics .*accuracy 0\.\d{4}.*roc_auc 0\.\d{4}', res.stdout)
    assert 'Traceback' not in res.stderr


def test_manifest_records_every_stage(trained):
    project, _, m = trained
    run_dir = project / 'runs' / m['run_id']
    assert m['schema_version'] == 1 and m['status'] == 'completed' and m['kind'] == 'train'
    assert m['settings']['ingest']['max_rows'] == 2000 and m['packages']['mlflow']
    assert [r['name'] for r in m['stages']] == STAGES
    for r in m['stages']:
        assert r['status'] == 'completed' and r['error'] is None and r['mlflow_run_id']
        assert r['duration_s'] >= r['cells_s'] > 0 and r['overhead_s'] == pytest.approx(
            r['duration_s'] - r['cells_s'], abs=1e-3
        )
        for rel, digest in {**r['inputs'], **r['outputs']}.items():
            assert sha256_path(run_dir / rel) == digest, rel
    assert (
        m['summary']['data_version']
        == json.loads((run_dir / 'artifacts/01_ingest/data_version.json').read_text())['data_version']
    )
    assert (run_dir / 'params.yaml').is_file() and (run_dir / 'logs' / '04_train.log').is_file()
    leftovers = [p.name for p in run_dir.rglob('.*')]
    assert leftovers == [], f'temporary files left behind: {leftovers}'
    writable = [p for p in run_dir.rglob('*') if p.is_file() and p.stat().st_mode & 0o222]
    assert writable == [], 'a completed run folder is read-only'


def test_executed_notebooks_keep_outputs_and_parameters(trained):
    project, _, m = trained
    run_dir = project / 'runs' / m['run_id']
    for r in m['stages']:
        nb = nbformat.read(run_dir / r['notebook'], as_version=4)
        injected = [c for c in nb.cells if 'injected-parameters' in c.metadata.get('tags', [])]
        assert injected and f'run_dir = "{run_dir}"' in injected[0].source.replace("'", '"')
        assert nb.metadata['papermill']['parameters']['run_dir'] == str(run_dir)
        assert any(c.get('outputs') for c in nb.cells if c.cell_type == 'code'), r['notebook']
    evaluate = nbformat.read(run_dir / '05_evaluate.ipynb', as_version=4)
    assert any('image/png' in o.get('data', {}) for c in evaluate.cells for o in c.get('outputs', [])), (
        'the curves are drawn'
    )


def test_mlflow_has_parent_and_nested_runs(trained):
    project, _, m = trained
    from mlops_nb.registry.tracking import client

    c = client(tracking_uri(project))
    parent = c.get_run(m['mlflow']['run_id'])
    assert parent.data.tags['mlops_nb.run_id'] == m['run_id'] and parent.info.status == 'FINISHED'
    assert parent.data.params['train.model'] == '', "the settings leave the model to the notebook's make_model"
    train = c.get_run(next(r['mlflow_run_id'] for r in m['stages'] if r['name'] == 'train')).data.params
    assert (
        train['estimator']
        == 'sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier'
    )
    assert train['max_iter'] == '200' and train['estimator.loss'] == 'log_loss', 'what was fitted, with its parameters'
    for r in m['stages']:
        run = c.get_run(r['mlflow_run_id'])
        assert (
            run.data.tags['mlflow.parentRunId'] == parent.info.run_id and run.data.tags['mlops_nb.stage'] == r['name']
        )
        assert r['notebook'] in [a.path for a in c.list_artifacts(run.info.run_id)]
    assert c.get_run(m['stages'][4]['mlflow_run_id']).data.metrics['roc_auc'] == m['summary']['metrics']['roc_auc']
    assert 'demographic_parity_ratio' in ''.join(c.get_run(m['stages'][5]['mlflow_run_id']).data.metrics)
    v = c.get_model_version('acs-employment', '1')
    assert v.tags['mlops_nb.run_id'] == m['run_id'] and v.tags['data_version'] == m['summary']['data_version']


def test_champion_predicts_raw_rows_in_another_process(trained):
    project, _, m = trained
    run_dir = project / 'runs' / m['run_id']
    holdout = pd.read_parquet(run_dir / 'artifacts/03_features/holdout.parquet').head(50)
    raw = holdout.drop(columns=['employed', 'id', 'year'])
    raw = raw.astype({c: str for c in raw.select_dtypes('category')})  # as a client sends JSON
    raw.to_json(project / 'rows.json', orient='split', index=False)
    code = (
        'import mlflow, pandas as pd, json, sys\n'
        f'mlflow.set_tracking_uri({tracking_uri(project)!r})\n'
        "model = mlflow.pyfunc.load_model('models:/acs-employment@champion')\n"
        "rows = pd.read_json(sys.argv[1], orient='split', dtype=False)\n"
        'print(json.dumps([int(p) for p in model.predict(rows)]))'
    )
    res = subprocess.run(
        [sys.executable, '-c', code, str(project / 'rows.json')], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    predicted = json.loads(res.stdout.strip().splitlines()[-1])
    expected = (
        pd.read_parquet(run_dir / 'artifacts/05_evaluate/predictions.parquet')
        .set_index('id')
        .loc[holdout.id, 'prediction']
    )
    assert predicted == expected.tolist()


def test_runs_and_show(trained):
    project, _, m = trained
    res = cli(project, 'runs')
    assert res.returncode == 0 and m['run_id'] in res.stdout and 'completed' in res.stdout
    assert m['summary']['data_version'] in res.stdout
    res = cli(project, 'show', m['run_id'][-6:])
    assert res.returncode == 0, res.stderr
    for r in m['stages']:
        assert r['name'] in res.stdout and r['outputs'][next(iter(r['outputs']))][:16] in res.stdout
    assert 'train.learning_rate = 0.1' in res.stdout and 'roc_auc = ' in res.stdout
    assert cli(project, 'show', 'no-such-run').returncode == 1


def test_failing_stage_keeps_champion_and_records_failure(trained):
    project, _, _ = trained
    before = champion_version(project)
    res = cli(project, 'run', *batch_without(project))
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert "column 'DEYE': missing_column" in res.stderr and 'stage validate failed' in res.stderr
    m = manifests(project)[-1]
    assert m['status'] == 'failed' and [r['status'] for r in m['stages']][:3] == ['completed', 'failed', 'pending']
    assert (project / 'runs' / m['run_id'] / '02_validate.ipynb').is_file(), (
        'the notebook is kept up to the failing cell'
    )
    assert champion_version(project) == before


def test_bad_settings_are_one_line_errors(trained):
    project, _, _ = trained
    n = len(manifests(project))
    for args, msg in [
        (['-p', 'train.max_iter=ten'], "expected int for 'max_iter'"),
        (['-p', 'trian.max_iter=3'], "did you mean 'train'"),
        (
            ['-p', 'train.model=forest'],
            "or one of hist_gradient_boosting, logistic_regression for a classification target; got 'forest'",
        ),
    ]:
        res = cli(project, 'run', *args)
        assert res.returncode == 1 and msg in res.stderr and 'Traceback' not in res.stderr, res.stderr
    assert len(manifests(project)) == n, 'a bad setting is refused before any run folder exists'


def test_settings_lists_every_setting_with_its_value(trained):
    project, _, _ = trained
    res = cli(project, 'settings', '-p', 'train.max_iter=50')
    assert res.returncode == 0, res.stderr
    line = next(l for l in res.stdout.splitlines() if l.startswith('train.max_iter '))
    assert line.split()[1:4] == ['int', '50', '200']
    assert re.search(r'^ingest\.max_rows\s+int\s+2000\s+0\s', res.stdout, re.M)


def test_a_setting_that_does_not_fit_its_notebook_is_caught_before_execution(project):
    nb_path = project / 'notebooks' / 'stages' / '03_features.ipynb'
    nb_path.write_text(
        nb_path.read_text().replace(
            'holdout_share: float = 0.2  # share of rows kept out of training, in (0, 1)',
            'holdout_share: int = 1  # share of rows kept out of training',
        )
    )
    res = cli(project, 'run')
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert (
        "settings.ini [features] holdout_share: expected int for 'holdout_share'" in res.stderr
        and "got '0.2'" in res.stderr
    )
    assert not (project / 'runs').exists(), 'nothing ran'


@pytest.mark.slow
def test_resume_continues_from_the_failed_stage(project):
    restore = break_notebook(project, '04_train.ipynb', 'raise RuntimeError("simulated failure")')
    res = cli(project, 'run')
    assert res.returncode == 1 and 'RuntimeError: simulated failure' in res.stderr and 'Traceback' not in res.stderr
    failed = manifests(project)[-1]
    assert [r['status'] for r in failed['stages']] == ['completed'] * 3 + ['failed'] + ['pending'] * 3
    restore()
    res = cli(project, 'run', '--resume', failed['run_id'])
    assert res.returncode == 0, res.stderr
    resumed = manifests(project)[-1]
    assert resumed['run_id'] == failed['run_id'] and resumed['status'] == 'completed'
    for before, after in zip(failed['stages'][:3], resumed['stages'][:3]):
        assert before['start'] == after['start'], 'completed stages are not run again'
    assert resumed['mlflow']['run_id'] == failed['mlflow']['run_id']
    assert resumed['summary']['decision'] == 'pending_approval' and champion_version(project) is None
    res = cli(project, 'run', '--resume', failed['run_id'])
    assert res.returncode == 1 and 'nothing to resume' in res.stderr


def test_resume_refuses_changed_inputs(project):
    restore = break_notebook(project, '04_train.ipynb', 'raise RuntimeError("simulated failure")')
    assert cli(project, 'run').returncode == 1
    restore()
    m = manifests(project)[-1]
    with open(project / 'runs' / m['run_id'] / 'artifacts/03_features/train.parquet', 'ab') as f:
        f.write(b'\0')
    res = cli(project, 'run', '--resume', m['run_id'])
    assert (
        res.returncode == 1
        and 'artifacts/03_features/train.parquet' in res.stderr
        and 'changed since it ran' in res.stderr
    )


def test_ctrl_c_records_the_run_as_interrupted(project):
    # the stage holds a write lock on the SQLite store when Ctrl-C comes: the run's record must not wait for it
    lock = (
        f'import sqlite3, time\ncon = sqlite3.connect({str(project / "mlflow.db")!r})\ncon.execute("BEGIN IMMEDIATE")'
    )
    break_notebook(project, '02_validate.ipynb', lock + '\ntime.sleep(120)')
    proc = subprocess.Popen(
        [*MLOPS_NB, '--settings', str(project / 'settings.ini'), 'run'],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as a terminal starts it: these tests may run as a background job, whose processes inherit SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        ms = manifests(project) if (project / 'runs').exists() else []
        if ms and ms[-1]['stages'][1]['status'] == 'running':
            break
        time.sleep(0.5)
    time.sleep(8)  # let the notebook reach the sleeping cell (validate imports MLflow first)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # the run's stacks, on its stderr
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 130 and time.time() - t0 < 15, err
    assert 'interrupted in stage validate' in err and 'Traceback' not in err
    m = manifests(project)[-1]
    assert m['status'] == 'interrupted' and m['stages'][1]['status'] == 'interrupted'
    assert (project / 'runs' / m['run_id'] / '02_validate.ipynb').is_file()
