"""The gate: evaluate against the champion, audit, decide, approve, reject, roll back; and the audit command."""

import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import MLOPS_NB, cli, make_project, manifests


def registry(project):
    from mlops_nb.registry.tracking import client

    return client(f'sqlite:///{project.resolve()}/mlflow.db')


def aliases(project):
    return {k: str(v) for k, v in registry(project).get_registered_model('acs-employment').aliases.items()}


def last_run(project, *args):
    res = cli(project, 'run', *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return manifests(project)[-1], res


@pytest.fixture(scope='module')
def gated(tmp_path_factory):
    "A project whose first model was approved by a person: `(project, manifest of that run)`"
    project = make_project(tmp_path_factory.mktemp('gate'))
    m, res = last_run(project)
    assert f'version 1, pending approval: mlops-nb approve {m["run_id"]} --by NAME' in res.stdout
    assert 'champion' not in aliases(project), 'nobody approved yet'
    res = cli(project, 'approve', m['run_id'], '--by', 'alice', '--note', 'looks right')
    assert res.returncode == 0 and 'version 1 approved by alice' in res.stdout, res.stderr
    return project, m


def test_approval_is_recorded_everywhere(gated):
    project, m = gated
    assert aliases(project) == {'champion': '1'}
    after = json.loads((project / 'runs' / m['run_id'] / 'manifest.json').read_text())
    (d,) = after['decisions']
    assert d['decision'] == 'approved' and d['by'] == 'alice' and d['note'] == 'looks right'
    reg = after['stages'][-1]['result']
    assert d['reports'] == reg['reports'] and set(d['reports']) == {'anomalies', 'verdict', 'audit'}
    tag = json.loads(registry(project).get_model_version('acs-employment', '1').tags['mlops_nb.approval'])
    assert tag['by'] == 'alice' and tag['reports'] == d['reports']
    res = cli(project, 'approve', m['run_id'], '--by', 'bob')
    assert res.returncode == 1 and 'already approved by alice' in res.stderr
    res = cli(project, 'models')
    assert res.returncode == 0 and 'approved by alice' in res.stdout and m['summary']['data_version'] in res.stdout


def test_evaluate_compares_with_the_champion_on_the_same_holdout(gated):
    project, _ = gated
    m, res = last_run(project, '-p', 'train.model=logistic_regression')
    verdict = json.loads((project / 'runs' / m['run_id'] / 'artifacts/05_evaluate/verdict.json').read_text())
    rows = m['stages'][4]['result']['rows']
    assert verdict['champion']['version'] == '1' and verdict['champion']['metrics']['rows'] == rows
    change = next(c for c in verdict['criteria'] if c['kind'] == 'change')
    assert change['value'] == pytest.approx(
        m['summary']['metrics']['roc_auc'] - verdict['champion']['metrics']['roc_auc']
    )
    slices = json.loads((project / 'runs' / m['run_id'] / 'artifacts/05_evaluate/slices.json').read_text())
    assert {s['column'] for s in slices} == {'SEX', 'RAC1P'} and sum(
        s['rows'] for s in slices if s['column'] == 'SEX'
    ) == rows
    # the champion's scores on this holdout are kept, for the next evaluate (a sweep's children) to read
    (kept,) = (project / 'runs' / '.cache').glob('scores-*.npy')
    preds = pd.read_parquet(project / 'runs' / m['run_id'] / 'artifacts/05_evaluate/predictions.parquet')
    assert np.array_equal(np.load(kept), preds['champion_score'].to_numpy())
    reg = m['stages'][-1]['result']
    if reg['decision'] == 'rejected':
        res = cli(project, 'approve', m['run_id'], '--by', 'alice')
        assert res.returncode == 1 and 'cannot be approved: the gate decided rejected' in res.stderr
    assert aliases(project)['champion'] == '1'


def scores_kept(project):
    return {p.name: p.stat().st_mtime_ns for p in (project / 'runs' / '.cache').glob('scores-*.npy')}


def test_failing_criteria_reject_with_reasons(gated):
    project, first = gated
    kept = scores_kept(project)
    m, res = last_run(
        project,
        '-p',
        'train.learning_rate=0.11',  # a new model: the champion itself would be the champion already
        '-p',
        'evaluate.criteria=roc_auc at least 0.999',
        '-p',
        'audit.criteria=SEX.demographic_parity_ratio at least 0.9999',
    )
    reg = m['stages'][-1]['result']
    assert reg['decision'] == 'rejected' and len(reg['reasons']) == 2
    assert reg['reasons'][0].startswith('evaluate: roc_auc = 0.') and 'needs at least 0.999' in reg['reasons'][0]
    assert reg['reasons'][1].startswith('audit: SEX.demographic_parity_ratio')
    assert 'rejected: evaluate: roc_auc' in res.stdout
    assert registry(project).get_model_version('acs-employment', reg['version']).tags['mlops_nb.decision'] == 'rejected'
    assert aliases(project)['champion'] == '1'
    # the champion, version 1, scored on the same holdout as before: its kept scores read, not computed again
    verdict = json.loads((project / 'runs' / m['run_id'] / 'artifacts/05_evaluate/verdict.json').read_text())
    assert verdict['champion']['version'] == '1' and len(scores_kept(project)) == 1
    if kept:  # written by test_evaluate_compares_with_the_champion_on_the_same_holdout
        assert scores_kept(project) == kept
    approved = json.loads((project / 'runs' / first['run_id'] / 'artifacts/05_evaluate/metrics.json').read_text())
    assert verdict['champion']['metrics'] == approved, 'the champion is the first run model: its metrics, exactly'


def test_a_new_champion_reruns_the_stages_that_read_it_not_a_train_from_scratch(gated):
    "The settings of the approved run again: evaluate compares with the champion now, the model is the champion"
    project, first = gated
    m, res = last_run(project)
    stages = {r['name']: r for r in m['stages']}
    assert stages['train'].get('cached_from', {}).get('run') == first['run_id']
    assert not stages['evaluate'].get('cached_from'), 'the first run compared with no champion: evaluated again'
    verdict = json.loads((project / 'runs' / m['run_id'] / 'artifacts/05_evaluate/verdict.json').read_text())
    champion, challenger = verdict['champion']['metrics']['roc_auc'], m['summary']['metrics']['roc_auc']
    assert verdict['champion']['version'] == '1' and champion == challenger, 'the same model, scored the same'
    assert m['stages'][-1]['result']['already_champion'] and 'the champion already' in res.stdout
    assert aliases(project)['champion'] == '1'


def test_an_unchanged_rerun_registers_no_second_version(gated):
    "A run whose train stage is reused refers to the version its model has; that version keeps its lineage"
    project, _ = gated
    first, _ = last_run(project, '-p', 'train.learning_rate=0.13')
    again, res = last_run(project, '-p', 'train.learning_rate=0.13')
    assert next(r for r in again['stages'] if r['name'] == 'train').get('cached_from', {}).get('run') == first['run_id']
    reg1, reg2 = first['stages'][-1]['result'], again['stages'][-1]['result']
    assert (
        reg2['version'] == reg1['version']
        and reg2['registered_by'] == first['run_id']
        and reg1['registered_by'] == first['run_id']
    )
    assert f'version {reg1["version"]} (registered by run {first["run_id"]})' in res.stdout, res.stdout
    versions = registry(project).search_model_versions("name = 'acs-employment'")
    assert [v.tags['mlops_nb.run_id'] for v in versions if str(v.version) == reg1['version']] == [first['run_id']]
    assert len({v.tags['mlops_nb.model_sha256'] for v in versions}) == len(versions), 'one version per model'
    assert aliases(project)['champion'] == '1'


@pytest.mark.slow
def test_two_approvals_at_once_cannot_both_win_and_rollback(gated):
    project, _ = gated
    champion = aliases(project)['champion']
    (b, _), (c, _) = last_run(project, '--no-cache'), last_run(project, '--no-cache')  # two trainings, two models
    assert b['stages'][-1]['result']['compared_with'] == c['stages'][-1]['result']['compared_with'] == champion
    procs = [
        subprocess.Popen(
            [*MLOPS_NB, '--settings', str(project / 'settings.ini'), 'approve', r['run_id'], '--by', who],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, who in ((b, 'bob'), (c, 'carol'))
    ]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in outs) == [0, 1], outs
    loser_err = next(err for rc, _, err in outs if rc == 1)
    assert 'changed since this decision was made' in loser_err
    winner, loser = (b, c) if outs[0][0] == 0 else (c, b)
    now = aliases(project)
    assert now == {'champion': winner['stages'][-1]['result']['version'], 'previous-champion': champion}
    res = cli(project, 'reject', loser['run_id'], '--by', 'dave', '--note', 'stale comparison')
    assert res.returncode == 0 and 'rejected by dave' in res.stdout
    res = cli(project, 'rollback', '--by', 'erin', '--note', 'complaints from the field')
    assert res.returncode == 0, res.stderr
    assert aliases(project)['champion'] == champion and aliases(project)['previous-champion'] == now['champion']
    res = cli(project, 'rollback', '--to', loser['stages'][-1]['result']['version'], '--by', 'erin', '--note', 'x')
    assert res.returncode == 1 and 'was rejected: it cannot become champion' in res.stderr
    from mlops_nb.registry.gate import history

    events = [e['event'] for e in history(registry(project), 'acs-employment')]
    assert events == ['approved', 'approved', 'rejected', 'rolled_back']


def test_approval_refuses_a_report_changed_after_the_decision(gated):
    project, _ = gated
    m, _ = last_run(project)
    report = project / 'runs' / m['run_id'] / 'artifacts/06_audit/audit.json'
    report.chmod(0o644)
    report.write_text(report.read_text().replace('"passed": false', '"passed": true') + ' ')
    res = cli(project, 'approve', m['run_id'], '--by', 'mallory')
    assert res.returncode == 1 and 'audit' in res.stderr and 'changed since the register stage read them' in res.stderr


def test_audit_command_rates_are_exact(tmp_path):
    # group a: tp fn fp tn = 1 1 1 1; group b: tp tp fn tn; group c: a single row (too small)
    df = pd.DataFrame({'y': [1, 1, 0, 0, 1, 1, 1, 0, 1], 'p': [1, 0, 1, 0, 1, 1, 0, 0, 1], 'g': list('aaaabbbbc')})
    df.to_csv(tmp_path / 'decisions.csv', index=False)
    args = [
        'audit',
        '--data',
        str(tmp_path / 'decisions.csv'),
        '--label',
        'y',
        '--prediction',
        'p',
        '--group',
        'g',
        '--min-group-size',
        '2',
        '--n-boot',
        '0',
        '--out',
        str(tmp_path / 'audit.json'),
    ]
    res = cli(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / 'audit.json').read_text())
    rows = {r['group']: r for r in report['groups']['g']}
    assert [rows['a'][k] for k in ('selection_rate', 'accuracy', 'tpr', 'fpr', 'fnr', 'precision')] == [
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
    ]
    assert [rows['b'][k] for k in ('selection_rate', 'accuracy', 'tpr', 'fpr', 'fnr', 'precision')] == [
        0.5,
        0.75,
        2 / 3,
        0.0,
        1 / 3,
        1.0,
    ]
    assert rows['c']['judgeable'] is False and rows['c']['count'] == 1
    d = report['disparities']['g']
    assert d['groups_judged'] == 2 and d['demographic_parity_ratio'] == 1.0 and d['equalized_odds_difference'] == 0.5
    res = cli(tmp_path, *args, '--criteria', 'equalized_odds_difference at most 0.2')
    assert res.returncode == 3 and 'failed' in res.stdout
    res = cli(
        tmp_path,
        'audit',
        '--data',
        str(tmp_path / 'decisions.csv'),
        '--label',
        'y',
        '--prediction',
        'p',
        '--group',
        'sex',
    )
    assert res.returncode == 1 and "no column 'sex'" in res.stderr and 'Traceback' not in res.stderr
