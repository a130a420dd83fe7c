"""Monitoring and the retraining loop: monitor runs, triggers, the feedback-loop guard, lineage, and the replay."""

import json

import pandas as pd
import pytest

from conftest import cli, manifests


def _monitor_result(project, run_id):
    m = json.loads((project / 'runs' / run_id / 'manifest.json').read_text())
    return m, next(s['result'] for s in m['stages'] if s['name'] == 'monitor')


def test_a_later_year_is_monitored_without_retraining(trained):
    project, _, _ = trained
    res = cli(project, 'monitor', '--data', 'acs_employment_ma', '-p', 'ingest.years=2018')
    assert res.returncode == 0, res.stdout + res.stderr
    m = manifests(project)[-1]
    assert (
        m['kind'] == 'monitor'
        and m['status'] == 'completed'
        and [s['name'] for s in m['stages']] == ['ingest', 'monitor']
    )
    _, r = _monitor_result(project, m['run_id'])
    assert (
        r['champion_version'] == '1' and r['rows'] == 2000 and r['labelled_rows'] == 2000 and r['excluded_labels'] == 0
    )
    assert r['columns'] == 16 and 0 <= r['drift_share'] <= 1 and not r['trigger']['triggered']
    assert set(r['performance']) >= {'accuracy', 'roc_auc'} and r['windows'][0]['window'] == '2018'
    assert f'monitor run {m["run_id"]} completed' in res.stdout and 'drift    ' in res.stdout
    drift = json.loads((project / 'runs' / m['run_id'] / 'artifacts/08_monitor/drift.json').read_text())
    assert {f['column'] for f in drift['features']} >= {'AGEP', 'SCHL'} and {
        p['column'] for p in drift['predictions']
    } == {'score', 'predicted_class'}
    report = (project / 'runs' / m['run_id'] / 'report.html').read_text()
    assert 'Data drift per feature' in report and 'Control charts' in report
    assert m['run_id'] in (project / 'runs' / 'index.html').read_text()


@pytest.mark.slow
def test_drift_triggers_a_warm_started_retraining_that_skips_echoed_labels_and_has_lineage(trained, tmp_path):
    from mlops_nb.stages.sources import bundled

    project, _, _ = trained
    batch = bundled('acs_employment_ma', '2016').sample(1500, random_state=0)
    batch['AGEP'] = batch['AGEP'] + 20  # the population aged
    batch['label_independent'] = [False] * 300 + [True] * 1200  # 300 labels came from the model's own decisions
    batch.to_csv(tmp_path / 'batch.csv', index=False)
    res = cli(
        project,
        'monitor',
        '--data',
        str(tmp_path / 'batch.csv'),
        '-p',
        'monitor.drift_features=AGEP',
        '-p',
        'monitor.min_labelled_rows=100',
        '-p',
        'train.warm_start=true',
        '--approve-as',
        'tester',
    )
    assert res.returncode == 0, res.stdout + res.stderr
    mon, retrain = manifests(project)[-2:]
    _, r = _monitor_result(project, mon['run_id'])
    assert 'AGEP' in r['drifted'] and r['excluded_labels'] == 300 and r['labelled_rows'] == 1200
    assert r['decision'] == 'retrain' and any(s['signal'] == 'feature_drift' for s in r['trigger']['signals'])
    trigger = json.loads((project / 'runs' / mon['run_id'] / 'artifacts/08_monitor/trigger.json').read_text())
    assert (
        trigger['triggered']
        and trigger['training_data']['recent_rows'] == 1200
        and trigger['training_data']['excluded_labels'] == 300
    )
    recent = pd.read_parquet(project / 'runs' / mon['run_id'] / 'artifacts/08_monitor/training/recent.parquet')
    assert len(recent) == 1200 and 'label_independent' not in recent, 'echoed labels never reach training'
    assert (
        retrain['kind'] == 'retrain'
        and retrain['parent_run'] == mon['run_id']
        and retrain['trigger']['monitor_run'] == mon['run_id']
    )
    assert retrain['stages'][2]['parameters']['split'] == 'time', (
        'judged on the newest rows, which the champion never saw'
    )
    train = retrain['stages'][3]['result']
    assert train['warm_start_from'] == '1' and train['iterations'] > 200, (
        'the retrained model continued from the champion'
    )
    assert 'labels excluded by the feedback-loop guard' in res.stdout and retrain['summary'].get('version')

    res = cli(project, 'lineage', retrain['summary']['version'])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert (
        f'retrain run {retrain["run_id"]}' in out
        and f'triggered by monitor run {mon["run_id"]}: feature_drift (AGEP drifted)' in out
    )
    assert (
        '1,200 new labelled rows, 300 labels excluded' in out
        and 'model acs-employment version 1' in out
        and 'started by hand' in out
    )
    assert 'by monitor run ' + mon['run_id'][-6:] in (project / 'runs' / 'index.html').read_text(), (
        'the dashboard shows the trigger'
    )


def test_the_prediction_log_is_a_batch_with_its_independent_labels(trained):
    from mlops_nb.stages.sources import bundled
    from mlops_nb.serving.predlog import PredictionLog
    from mlops_nb.serving.logstore import log_url, utcnow
    from mlops_nb.serving.feedback import record_feedback
    from mlops_nb.core.project import load_project

    project, _, _ = trained
    rows = bundled('acs_employment_ma', '2017').head(400)
    features = {
        c: [None if pd.isna(v) else (v if isinstance(v, float) else str(v)) for v in rows[c]]
        for c in rows.columns
        if c not in ('id', 'year', 'employed')
    }
    url = log_url(load_project(project / 'settings.ini'))
    plog = PredictionLog(url, flush_s=0.01).start()
    for q in range(4):  # four requests of 100 rows
        plog.add(
            'predictions',
            dict(
                request_id=f'r{q}',
                time=utcnow(),
                model_name='acs-employment',
                model_version='1',
                role='champion',
                status=200,
                rows=100,
                features={c: v[100 * q : 100 * (q + 1)] for c, v in features.items()},
                predictions=[1] * 100,
                scores=[0.9] * 100,
                latency_ms=1.0,
            ),
        )
    plog.close()
    labels = rows['employed'].tolist()
    record_feedback(
        url,
        [{'request_id': f'r{i // 100}', 'row': i % 100, 'label': labels[i]} for i in range(300)],
        source='survey',
        independent=True,
    )
    record_feedback(
        url, [{'request_id': 'r3', 'row': i, 'label': 1} for i in range(100)], source='clicks'
    )  # echoes the model
    res = cli(project, 'monitor', '--from-log', '--since', '1h')
    assert res.returncode == 0, res.stdout + res.stderr
    _, r = _monitor_result(project, manifests(project)[-1]['run_id'])
    assert r['rows'] == 400 and r['labelled_rows'] == 300 and r['excluded_labels'] == 100


def test_monitoring_needs_a_champion_and_a_batch(project):
    res = cli(project, 'monitor', '--data', 'acs_employment_ma')
    assert (
        res.returncode == 1
        and "model 'acs-employment' has no champion to monitor" in res.stderr
        and 'Traceback' not in res.stderr
    )
    assert manifests(project)[-1]['status'] == 'failed', 'the run folder is kept with its failure'
    res = cli(project, 'monitor')
    assert res.returncode == 1 and 'give the batch to monitor: --data SOURCE or --from-log' in res.stderr


@pytest.mark.slow
def test_replay_on_elec2_drift_triggered_retraining_beats_never_with_fewer_retrains_than_periodic(project):
    res = cli(project, 'replay', '--dataset', 'elec2', '--batch', 'weekly', '-p', 'train.model=logistic_regression')
    assert res.returncode == 0, res.stdout + res.stderr
    m = manifests(project)[-1]
    assert m['kind'] == 'replay' and m['status'] == 'completed'
    rep = next(s['result'] for s in m['stages'] if s['name'] == 'replay')
    p = {x['policy']: x for x in rep['policies']}
    assert p['never']['retrains'] == 0 and p['periodic']['retrains'] == 27
    assert p['monitor']['accuracy'] >= p['never']['accuracy'] + 0.02, p
    assert (
        p['monitor']['accuracy'] >= p['periodic']['accuracy'] - 0.005
        and p['monitor']['retrains'] < p['periodic']['retrains']
    ), p
    assert (project / 'runs' / m['run_id'] / 'artifacts/09_replay/accuracy.png').stat().st_size > 10_000
    assert 'monitor vs never: +' in res.stdout


@pytest.mark.parametrize(
    'args, message', [(('--dataset', 'acs', '--batch', 'weekly'), 'replay.batch for acs must be one of yearly')]
)
def test_replay_refuses_a_batch_its_dataset_does_not_have(project, args, message):
    res = cli(project, 'replay', *args)
    assert res.returncode == 1 and message in res.stderr and 'Traceback' not in res.stderr


@pytest.mark.slow
def test_a_champion_trained_on_another_machine_is_monitored_and_served_from_mlflow(trained, tmp_path):
    "Its run folder is not here (a teammate's, through a shared tracking server): its reference comes from its MLflow run"
    from pathlib import Path
    from urllib.parse import urlparse
    from mlops_nb.core.project import load_project
    from mlops_nb.serving.models import MlflowRegistry
    from mlops_nb.registry.tracking import alias_version, client

    project, _, _ = trained
    uri = load_project(project / 'settings.ini').tracking_uri
    c = client(uri)
    v = alias_version(c, 'acs-employment')
    served = lambda cache: MlflowRegistry(uri, 'acs-employment', tmp_path / cache).load(str(v.version)).columns
    run_dir = Path(v.tags['mlops_nb.run_dir'])
    away = project.parent / f'{run_dir.name}.elsewhere'
    logged = Path(urlparse(c.get_run(v.run_id).info.artifact_uri).path) / 'reference'
    here = served('here')
    assert any(col.int_ok for col in here), 'the schema lets whole-number categories come as integers'
    run_dir.rename(away)
    try:
        logged.rename(logged.with_name('hidden'))  # as a version registered before the reference was logged
        try:
            res = cli(project, 'monitor', '--data', 'acs_employment_ma', '-p', 'ingest.years=2018')
            signature_only = served('hidden')
        finally:
            logged.with_name('hidden').rename(logged)
        assert (
            res.returncode == 1
            and f'the reference of acs-employment version {v.version} is not in MLflow either' in res.stderr
        )
        assert 'Traceback' not in res.stderr and manifests(project)[-1]['status'] == 'failed'
        assert not any(col.int_ok for col in signature_only)
        res = cli(project, 'monitor', '--data', 'acs_employment_ma', '-p', 'ingest.years=2018')
        assert served('away') == here
    finally:
        away.rename(run_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    m = manifests(project)[-1]
    _, r = _monitor_result(project, m['run_id'])
    assert r['champion_version'] == str(v.version) and r['champion_run'] == run_dir.name and r['rows'] == 2000
    fetched = project / 'runs' / m['run_id'] / 'artifacts/08_monitor/champion' / run_dir.name
    for rel in (
        'artifacts/03_features/train.parquet',
        'artifacts/05_evaluate/predictions.parquet',
        'artifacts/04_train/model/MLmodel',
    ):
        assert (fetched / rel).is_file(), rel
    assert (fetched / 'artifacts/03_features/train.parquet').read_bytes() == (
        run_dir / 'artifacts/03_features/train.parquet'
    ).read_bytes()
