"""Continuous learning on your own data: `mlops-nb replay --data` in a project made by `mlops-nb init`, on streams
with a concept change planted at a known row, for a classifier and a regressor; bad input refused in one line."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import cli

CHANGE, ROWS, BATCH = 2500, 4000, 250  # the concept changes at row 2,501: the first row of batch 10 (0-based)


def stream(task='classification', seed=0, rows=ROWS, change=CHANGE):
    "A time-ordered stream whose target's relation to `a` flips at row `change`"
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    flip = np.where(np.arange(rows) < change, 1.0, -1.0)
    signal = 3 * flip * a + b
    y = (signal > 0).astype(int) if task == 'classification' else signal + rng.normal(0, 0.3, rows)
    return pd.DataFrame(
        {
            'reading_id': [f'r{i:05d}' for i in range(rows)],
            'sensor': rng.choice(['left', 'right', 'top'], rows),
            'a': a.round(4),
            'b': b.round(4),
            'noise': rng.normal(size=rows).round(4),
            'y': y,
        }
    )


def init(folder: Path, data: Path, target='y'):
    from mlops_nb.pipeline.scaffold import init_project

    return init_project(folder, str(data), target, echo=lambda *_: None)


def replay_in(project: Path, data: Path, batch=str(BATCH), **kw):
    "The replay stage of `project` on `data`, in-process, with the project's settings (as `mlops-nb replay` runs it)"
    from mlops_nb.core.project import load_project
    from mlops_nb.monitoring.replay import replay_stage

    p = load_project(project / 'settings.ini', ['replay.window_batches=2', 'replay.cooldown_batches=2'])
    r = p.settings['replay']
    return replay_stage(
        str(project / 'runs' / 'test'),
        p.settings,
        p.root,
        data=str(data),
        batch=batch,
        **{
            k: r[k]
            for k in ('train_share', 'period', 'window_batches', 'baseline_points', 'cooldown_batches', 'drift_share')
        },
        progress=False,
        **kw,
    )


@pytest.mark.parametrize('task', ['classification', 'regression'])
def test_the_monitor_policy_retrains_after_a_planted_change_not_before_and_beats_never_retraining(tmp_path, task):
    data = tmp_path / f'{task}_stream.csv'
    stream(task).to_csv(data, index=False)
    project = init(tmp_path / 'project', data)
    settings = (project / 'settings.ini').read_text()
    assert f'task = {task}' in settings and 'id_column = reading_id' in settings and 'time_column =\n' in settings
    res = replay_in(project, data)
    b, metric = res.batches, res.metric
    assert metric == ('accuracy' if task == 'classification' else 'rmse')
    assert res.settings['model'] == (
        'HistGradientBoostingClassifier' if task == 'classification' else 'HistGradientBoostingRegressor'
    ), "the train notebook's model cell"
    assert b['rows'].eq(BATCH).all() and b['period'].iloc[0] == 'rows 751-1,000' and len(b) == ROWS // BATCH - 3
    after = b['batch'] >= CHANGE // BATCH
    monitor = b.loc[b['monitor_retrained'], 'batch'].tolist()
    assert monitor and min(monitor) == CHANGE // BATCH, (
        f'retrained after batches {monitor}: first after the change, never before'
    )
    assert (b.loc[~after, 'signals'] == '').all() and (b.loc[after, 'signals'] != '').any()
    better = lambda x, y: x > y + 0.15 if metric == 'accuracy' else x < y * 0.5
    assert better(b.loc[after, f'monitor_{metric}'].mean(), b.loc[after, f'never_{metric}'].mean()), b
    assert res.summary.loc['never', 'retrains'] == 0 and res.summary.loc['periodic', 'retrains'] == 3
    assert {'drift_share', 'drifted', 'signals', 'never_retrained', 'periodic_retrained'} <= set(b.columns)
    rep = json.loads((project / 'runs/test/artifacts/09_replay/replay.json').read_text())
    assert rep['metric'] == metric and rep['monitor_gain_over_never'] > 0 and rep['task'] == task
    assert [r['batch'] for r in rep['retrains'] if r['policy'] == 'monitor'] == monitor
    assert (project / 'runs/test/artifacts/09_replay/accuracy.png').stat().st_size > 10_000


@pytest.fixture(scope='module')
def orders(tmp_path_factory):
    "A project made by `mlops-nb init` on a CSV of dated orders (not ours), and that CSV"
    tmp = tmp_path_factory.mktemp('orders')
    rng = np.random.default_rng(1)
    days = pd.Timestamp('2023-01-01') + pd.to_timedelta(np.sort(rng.integers(0, 365, 3000)), unit='D')
    df = stream(rows=3000, change=int(np.searchsorted(days, pd.Timestamp('2023-09-01')))).drop(columns='reading_id')
    df.insert(0, 'order_date', days.strftime('%Y-%m-%d'))
    df['y'] = np.where(df['y'] == 1, 'returned', 'kept')
    df.to_csv(tmp / 'orders.csv', index=False)
    return init(tmp / 'shop', tmp / 'orders.csv'), tmp / 'orders.csv'


def test_replay_data_on_a_users_file_through_the_cli(orders):
    project, data = orders
    res = cli(
        project,
        'replay',
        '--data',
        str(data),
        '--batch',
        'monthly',
        '-p',
        'replay.window_batches=2',
        '-p',
        'replay.train_share=0.3',
    )
    assert res.returncode == 0, res.stdout + res.stderr
    run = next((project / 'runs').glob('*/manifest.json')).parent
    m = json.loads((run / 'manifest.json').read_text())
    rep = next(s['result'] for s in m['stages'] if s['name'] == 'replay')
    assert (
        m['kind'] == 'replay'
        and rep['batches'] == 12
        and rep['first_batches'] == 4
        and rep['time_column'] == 'order_date'
    )
    monitor = [r['batch'] for r in rep['retrains'] if r['policy'] == 'monitor']
    assert monitor and min(monitor) >= 8, f'the change is in September (batch 8); monitor retrained after {monitor}'
    out = res.stdout
    assert '8 monthly batches after training on the first 4' in out and 'monitor vs never: +' in out
    assert 'monitor  retrained after batches ' + ', '.join(map(str, monitor)) in out
    report = (run / 'report.html').read_text()
    assert 'Three policies' in report and 'Retrains' in report and 'Batch by batch' in report and '2023-09' in report


def _bad(folder: Path, name: str, df: pd.DataFrame):
    df.to_csv(folder / name, index=False)
    return str(folder / name)


@pytest.mark.parametrize(
    'case', ['time does not parse', 'batch larger than the data', 'one batch', 'target absent later', 'no time column']
)
def test_bad_input_is_one_line_and_a_non_zero_exit(orders, case):
    project, data = orders
    df, folder = pd.read_csv(data), data.parent
    if case == 'time does not parse':
        df.loc[7, 'order_date'] = 'next tuesday'
        args, line = (
            ('--data', _bad(folder, 'bad_time.csv', df), '--batch', 'monthly'),
            "time column 'order_date' of {} does not parse as dates: 'next tuesday' in row 8",
        )
    elif case == 'batch larger than the data':
        args, line = (
            ('--data', str(data), '--batch', '5000'),
            '--batch 5,000 rows is larger than {}, which has 3,000 rows',
        )
    elif case == 'one batch':
        args, line = (
            ('--data', str(data), '--batch', 'yearly'),
            '--batch yearly leaves 1 batch of {} (3,000 rows): a replay needs at least 2',
        )
    elif case == 'target absent later':
        df.loc[2700:, 'y'] = None
        args, line = (
            ('--data', _bad(folder, 'unlabelled.csv', df), '--batch', 'monthly'),
            "the target 'y' is missing in 300 rows of {}, from batch 2023-11 (11 of 12) on",
        )
    else:
        args, line = (
            ('--data', str(data), '--time-column', 'when', '--batch', 'weekly'),
            "--time-column 'when' is not a column of {}",
        )
    before = len(list((project / 'runs').glob('*')))
    res = cli(project, 'replay', *args)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip() and 'INFO' not in l]
    assert len(lines) == 1 and lines[0].startswith('error: ') and line.format(args[1]) in lines[0], res.stderr
    assert len(list((project / 'runs').glob('*'))) == before, 'no run folder for bad input'
