"""Services checked before any stage: a tracking or artifact store that cannot be used is one line, its password masked, and no run."""

import time

from conftest import cli
from test_params import init_project


def test_tracking_store_down_is_one_masked_line_and_no_run(tmp_path):
    project = init_project(tmp_path)
    for uri, cause in [
        ('postgresql://mlflow:PASSWORD@127.0.0.1:9/mlflow', 'Connection refused'),
        (f'sqlite:///{project / "settings.ini"}/mlflow.db', 'is not a folder it can write to'),
    ]:
        t0 = time.time()
        res = cli(project, 'run', '-p', f'mlflow.tracking_uri={uri}')
        took = time.time() - t0
        assert res.returncode == 1 and res.stdout == '' and len(res.stderr.splitlines()) == 1, res.stderr
        assert 'the MLflow tracking store' in res.stderr and cause in res.stderr and 'at most 12 s' in res.stderr, (
            res.stderr
        )
        assert 'PASSWORD' not in res.stderr and 'Traceback' not in res.stderr
        assert took < 12 + 10, 'within the bound the line states (and the start of the command)'
    assert (
        'mlflow:***@127.0.0.1:9'
        in cli(project, 'run', '-p', 'mlflow.tracking_uri=postgresql://mlflow:PASSWORD@127.0.0.1:9/mlflow').stderr
    )
    res = cli(project, 'run', '-p', 'mlflow.artifact_location=settings.ini/artifacts')
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
    assert 'the artifact store' in res.stderr and 'settings.ini is not a folder it can write to' in res.stderr, (
        res.stderr
    )
    assert not (project / 'runs').exists(), 'no run folder, so none listed as running'
    assert 'no runs yet' in cli(project, 'runs').stdout
