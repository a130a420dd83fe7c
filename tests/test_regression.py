"""Regression: the same pipeline on a numeric target (hours worked per week in the Adult census data)."""

import json

import pytest

from conftest import cli, manifests

REGRESSION = [
    '-p',
    'data.task=regression',
    '-p',
    'data.source=adult',
    '-p',
    'data.target=hours_per_week',
    '-p',
    'data.time_column=',
    '-p',
    'data.sensitive_columns=sex, race',
    '-p',
    'ingest.years=',
    '-p',
    'evaluate.criteria=r2 at least 0.05, rmse relative_change at most 0.05',
    '-p',
    'evaluate.slice_columns=sex',
    '-p',
    'audit.criteria=mae_ratio at least 0.7',
    '-p',
    'project.model_name=adult-hours',
    '-p',
    'project.key_metric=r2',
]


@pytest.mark.slow
def test_regression_run_reports_rmse_mae_r2_and_errors_by_group(project):
    res = cli(project, 'run', *REGRESSION, '--approve-as', 'tester')
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'r2 ' in res.stdout and 'champion' in res.stdout
    m = manifests(project)[-1]
    metrics = {s['name']: s.get('result') for s in m['stages']}['evaluate']
    assert {'rmse', 'mae', 'r2'} <= set(metrics) and 'accuracy' not in metrics
    assert 0 < metrics['mae'] <= metrics['rmse'] and 0.05 < metrics['r2'] < 1
    run_dir = project / 'runs' / m['run_id']
    audit = json.loads((run_dir / 'artifacts/06_audit/audit.json').read_text())
    assert audit['passed'] and 0.7 <= audit['disparities']['sex']['mae_ratio'] <= 1
    assert {g['group'] for g in audit['groups']['sex']} == {'Female', 'Male'}
    assert {'mae', 'rmse', 'mean_error', 'mae_low', 'mae_high'} <= set(audit['groups']['sex'][0])

    # the second run is compared with the first on the same holdout, by the change in RMSE
    res = cli(project, 'run', *REGRESSION, '-p', 'train.model=ridge')
    assert res.returncode == 0, res.stdout + res.stderr
    verdict = json.loads(
        (project / 'runs' / manifests(project)[-1]['run_id'] / 'artifacts/05_evaluate/verdict.json').read_text()
    )
    assert verdict['champion']['version'] == '1'
    rel = next(c for c in verdict['criteria'] if c['kind'] == 'relative_change')
    assert rel['champion'] == metrics['rmse'] and rel['outcome'] in ('passed', 'failed')


def test_classification_criteria_on_a_regression_task_are_refused_before_anything_runs(project):
    res = cli(project, 'run', '-p', 'data.task=regression', '-p', 'train.model=logistic_regression')
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert "or one of hist_gradient_boosting, ridge for a regression target; got 'logistic_regression'" in res.stderr
    assert 'evaluate.criteria names accuracy, roc_auc, roc_auc, which a regression evaluate does not have' in res.stderr
    assert not (project / 'runs').exists() or not list((project / 'runs').glob('*/manifest.json'))


def test_a_text_target_is_a_data_error_for_regression(project):
    res = cli(project, 'run', *REGRESSION, '-p', 'data.target=sex')
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    assert (
        "data.task = regression needs a numeric target; 'sex' holds str values such as 'Male' (in adult)" in res.stderr
    )
    assert not manifests(project), 'refused before a run folder is made'
