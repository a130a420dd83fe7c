"""`mlops-nb sweep`: child runs per combination, locally and on a Dask LocalCluster, a worker killed mid-task, the best gated."""

import json
import os

import pytest

from conftest import cli, make_project, manifests

GRID = ['-p', 'train.learning_rate=0.05,0.2', '-p', 'train.max_leaf_nodes=7,31', '--set', 'train.max_iter=20']


def _sweep(project):
    (m,) = [m for m in manifests(project) if m['kind'] == 'sweep']
    run_dir = project / 'runs' / m['run_id']
    return m, run_dir, json.loads((run_dir / 'artifacts/sweep/results.json').read_text())


@pytest.fixture(scope='module')
def local(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp('sweep_local'))
    res = cli(project, 'sweep', *GRID, '--approve-as', 'tester')
    assert res.returncode == 0, res.stdout + res.stderr
    return project, res


@pytest.mark.slow
def test_local_sweep_ranks_children_and_gates_the_best(local):
    project, res = local
    m, run_dir, results = _sweep(project)
    sw = m['sweep']
    assert m['status'] == 'completed' and sw['executor'] == 'local' and sw['kind'] == 'model-centric'
    assert (sw['shared_stages'], sw['child_stages'], sw['best_stages']) == (
        ['ingest', 'validate', 'features'],
        ['train', 'evaluate'],
        ['audit', 'register'],
    )
    # one child run per combination, each under the sweep, its shared inputs the sweep's own files (hard links)
    children = [json.loads((run_dir / c['folder'] / 'manifest.json').read_text()) for c in sw['children']]
    assert len(children) == 4 and len({c['run_id'] for c in children}) == 4
    assert {tuple(sorted(c['sweep']['combination'].items())) for c in children} == {
        (('train.learning_rate', lr), ('train.max_leaf_nodes', n)) for lr in ('0.05', '0.2') for n in ('7', '31')
    }
    shared = {rel: h for r in m['stages'][:3] for rel, h in r['outputs'].items()}
    for c in children:
        assert c['kind'] == 'sweep-child' and c['parent_run'] == m['run_id'] and c['status'] == 'completed'
        assert c['shared_inputs'] == shared and [r['name'] for r in c['stages'] if r.get('shared_from')] == [
            'ingest',
            'validate',
            'features',
        ]
        assert c['settings']['train']['learning_rate'] == float(c['sweep']['combination']['train.learning_rate'])
    snap = 'artifacts/01_ingest/data.parquet'
    assert os.stat(run_dir / sw['children'][0]['folder'] / snap).st_ino == os.stat(run_dir / snap).st_ino
    # ranked best first by the key metric, in a table, a plot and a notebook
    table = results['table']
    assert [r['rank'] for r in table] == [1, 2, 3, 4] and len({r['child'] for r in table}) == 4
    assert [r['roc_auc'] for r in table] == sorted([r['roc_auc'] for r in table], reverse=True)
    assert (run_dir / 'artifacts/sweep/ranking.png').stat().st_size > 1000 and (
        run_dir / 'artifacts/sweep/ranking.csv'
    ).is_file()
    assert 'Which settings moved the metric' in (run_dir / 'sweep.ipynb').read_text()
    report = (run_dir / 'report.html').read_text()
    assert 'id="sweep"' in report and 'ranking.csv' in report, 'the report shows the ranking'
    assert (
        sw['moved_most'] == results['effects'][0]['setting']
        and results['effects'][0]['range'] >= results['effects'][1]['range']
    )
    # the best child's train and evaluate are the sweep's; audit and register ran for it alone; approved as champion
    best = sw['best']
    assert best['roc_auc'] == table[0]['roc_auc'] and best['run_id'].endswith(table[0]['child'])
    assert {r['name']: r.get('from_child') for r in m['stages']}['train'] == best['run_id']
    assert m['summary']['metrics']['roc_auc'] == best['roc_auc']
    assert [r['status'] for r in m['stages']] == ['completed'] * 7
    assert 'model-centric' in res.stdout and f'moved roc_auc most: {sw["moved_most"]}' in res.stdout
    assert 'approved by tester: champion' in res.stdout, res.stdout
    assert m['decisions'][-1]['decision'] == 'approved'


@pytest.mark.slow
def test_dask_sweep_survives_a_killed_worker(local, tmp_path, monkeypatch):
    "Two worker processes; the first child's worker dies after its train stage: retried once, no result lost or doubled"
    project = make_project(tmp_path)
    monkeypatch.setenv('MLOPS_NB_SWEEP_CRASH', '0')  # run_child calls os._exit on its first attempt of combination 0
    res = cli(project, 'sweep', *GRID, '--workers', '2')
    assert res.returncode == 0, res.stdout + res.stderr
    m, run_dir, results = _sweep(project)
    sw = m['sweep']
    assert m['status'] == 'completed' and sw['executor'] == 'dask' and sw['workers'] == 2
    first = sw['children'][0]
    assert sw['retried'] == [first['run_id']] and len(first['attempts']) == 2
    assert first['attempts'][0]['pid'] != first['attempts'][1]['pid'], 'the retry ran in another worker process'
    child = json.loads((run_dir / first['folder'] / 'manifest.json').read_text())
    assert child['status'] == 'completed' and child['sweep']['attempt'] == 2
    assert [r['status'] for r in child['stages']] == ['completed'] * 5
    assert all(len(c['attempts']) == 1 for c in sw['children'][1:])
    # the same results as one after another: every combination once
    by_combo = lambda rows: {(r['train.learning_rate'], r['train.max_leaf_nodes']): r['roc_auc'] for r in rows}
    assert len(results['table']) == 4 and by_combo(results['table']) == by_combo(_sweep(local[0])[2]['table'])
    # the dead attempt's MLflow run is marked killed, the retry's finished
    from mlflow.tracking import MlflowClient

    c = MlflowClient(m['mlflow']['tracking_uri'])
    runs = c.search_runs(
        [m['mlflow']['experiment_id']],
        f"tags.`mlops_nb.run_id` = '{first['run_id']}' and tags.`mlops_nb.kind` = 'sweep-child'",
    )
    assert sorted(r.info.status for r in runs) == ['FINISHED', 'KILLED']
    assert 'pending approval' in res.stdout


@pytest.mark.slow
def test_a_sweep_whose_machine_died_resumes(tmp_path, monkeypatch):
    "The process dies in the second child: --resume keeps the first child, reruns the second, and gates the best"
    project = make_project(tmp_path)
    monkeypatch.setenv('MLOPS_NB_SWEEP_CRASH', '1')  # os._exit after the train stage of combination 1's first attempt
    res = cli(project, 'sweep', '-p', 'train.learning_rate=0.05,0.2', '--set', 'train.max_iter=20')
    assert res.returncode == 17, res.stdout + res.stderr
    m, run_dir, _ = (lambda m: (m, project / 'runs' / m['run_id'], None))(manifests(project)[0])
    assert m['status'] == 'running' and [r['status'] for r in m['stages']][:3] == ['completed'] * 3
    first = json.loads((run_dir / 'children/c1/manifest.json').read_text())
    assert (
        first['status'] == 'completed'
        and json.loads((run_dir / 'children/c2/manifest.json').read_text())['status'] == 'running'
    )
    res = cli(project, 'runs')
    assert f'continue with: mlops-nb sweep --resume {run_dir}' in res.stdout, (
        'its process is gone: interrupted, at once' + res.stdout
    )
    (project / 'settings.ini').write_text((project / 'settings.ini').read_text().replace('n_boot = 50', 'n_boot = 40'))
    res = cli(project, 'sweep', '--resume', str(run_dir))
    assert res.returncode == 1 and 'settings.ini changed since sweep' in res.stderr and 'Traceback' not in res.stderr, (
        res.stderr
    )
    (project / 'settings.ini').write_text((project / 'settings.ini').read_text().replace('n_boot = 40', 'n_boot = 50'))
    res = cli(project, 'sweep', '--resume', str(run_dir), '--approve-as', 'tester')
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        '1 of 2 combinations completed before: kept' in res.stdout and 'approved by tester: champion' in res.stdout
    ), res.stdout
    m, _, results = _sweep(project)
    sw = m['sweep']
    assert (
        m['status'] == 'completed'
        and [r['status'] for r in m['stages']] == ['completed'] * 7
        and len(sw['resumed']) == 1
    )
    assert json.loads((run_dir / 'children/c1/manifest.json').read_text()) == first, (
        'the completed child is kept as it was'
    )
    assert [len(c['attempts']) for c in sw['children']] == [1, 2] and [c['status'] for c in sw['children']] == [
        'completed'
    ] * 2, sw['children']
    assert len(results['table']) == 2 and sw['best']['run_id'] in {c['run_id'] for c in sw['children']}
    res = cli(project, 'sweep', '--resume', str(run_dir))
    assert res.returncode == 1 and 'nothing to resume' in res.stderr


def test_sweep_errors_are_messages(project):
    for args, msg in [
        (['-p', 'serve.weights=90/10,50/50'], 'read by no stage'),
        (['-p', 'train.max_iter=10,ten'], "expected int for 'max_iter'"),
        (['-p', 'train.max_iter=10'], 'nothing to sweep'),
        (
            ['-p', 'train.max_iter=10,20', '--executor', 'local', '--scheduler', 'tcp://127.0.0.1:1'],
            '--scheduler needs --executor dask',
        ),
    ]:
        res = cli(project, 'sweep', *args)
        assert res.returncode == 1 and msg in res.stderr and 'Traceback' not in res.stderr, (args, res.stderr)
    assert not (project / 'runs').exists() or not list((project / 'runs').glob('*/manifest.json'))


def test_check_workers_says_what_workers_cannot_reach(project):
    from distributed import Client, LocalCluster
    from mlops_nb.core.basics import MlopsError
    from mlops_nb.core.project import load_project
    from mlops_nb.pipeline.sweep_executors import _probe, check_workers

    p = load_project(project / 'settings.ini')
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        assert len(check_workers(client, p)) == 1, 'a worker on this machine sees the same paths'
    assert not list((project / 'runs').glob('.sweep-check-*')), 'the probe file is removed'
    assert _probe(str(project / 'absent'), 'x', [str(project / 'also-absent')], []) == [
        f'cannot read {project / "absent"} (FileNotFoundError)',
        f'{project / "also-absent"} not found',
    ]

    class Elsewhere:  # a worker on another machine, without the shared path
        def scheduler_info(self):
            return {'workers': {'tcp://10.0.0.9:4000': {}}}

        def run(self, fn, token_file, token, paths, urls):
            return {'tcp://10.0.0.9:4000': [f'cannot read {token_file} (FileNotFoundError)']}

    with pytest.raises(
        MlopsError,
        match=r'(?s)1 of 1 Dask workers cannot reach.*10.0.0.9:4000: cannot read .*sweep-check.*drop --scheduler',
    ):
        check_workers(Elsewhere(), p)
