"""A/B analysis from live traffic: the statistics against hand formulas, the verdicts, the errors, and `mlops-nb abtest`."""

import json
import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from conftest import cli, make_project
from mlops_nb.monitoring.abtest import ab_compare, correct
from mlops_nb.monitoring.ab_report import ab_text, plot_ab
from mlops_nb.monitoring.ab_stats import welch
from mlops_nb.core.basics import MlopsError

Z975, Z80 = 1.959963984540054, 0.8416212335729143  # normal quantiles at 0.975 and 0.8, from tables


def frame(arms, extra=()):
    "A read_predictions-like frame: `arms` is [(role, version, predictions, labels)], one request per two rows"
    t0, rec = pd.Timestamp('2026-11-01', tz='UTC'), []
    for role, v, preds, labels in arms:
        for i, (p, y) in enumerate(zip(preds, labels)):
            rec.append(
                dict(
                    request_id=f'{role}{v}-{i // 2}',
                    row=i % 2,
                    time=t0 + timedelta(minutes=len(rec)),
                    role=role,
                    model_version=v,
                    prediction=p,
                    label=y,
                    label_independent=True,
                )
            )
    return pd.DataFrame(rec + list(extra))


def binary(k1, n1, k2, n2):
    "Champion version 1 right on k1 of n1 rows, challenger version 2 on k2 of n2"
    return frame(
        [
            ('champion', '1', [1] * n1, [1] * k1 + [0] * (n1 - k1)),
            ('challenger', '2', [1] * n2, [1] * k2 + [0] * (n2 - k2)),
        ]
    )


def wilson(k, n, z=Z975):
    p = k / n
    c, h = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (c - h) / (1 + z * z / n), (c + h) / (1 + z * z / n)


def t_sf2(t, df, steps=4000):
    "Two-sided p-value of Student's t by Simpson's rule on the density (no SciPy)"
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)
    h = abs(t) / steps
    area = h / 3 * (f(0) + f(abs(t)) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps)))
    return 1 - 2 * area


def test_accuracy_matches_hand_formulas():
    r = ab_compare(binary(80, 100, 90, 100), alpha=0.05, min_effect=0.01)
    assert (
        r['metric'] == 'accuracy'
        and r['higher_is_better']
        and r['test'] == 'two-proportion z'
        and r['ci_method'] == 'newcombe'
    )
    assert r['champion']['rows'] == 100 and r['champion']['requests'] == 50 and r['champion']['value'] == 0.8
    assert r['challenger']['model_version'] == '2' and r['challenger']['value'] == 0.9
    assert r['difference'] == pytest.approx(0.1)
    # pooled z-test: p = 0.85, z = 0.1 / sqrt(0.85 * 0.15 * (1/100 + 1/100)) = 1.98030
    z = 0.1 / math.sqrt(0.85 * 0.15 * 0.02)
    assert r['statistic'] == pytest.approx(z, rel=1e-9) and z == pytest.approx(1.98030, abs=1e-5)
    assert r['p_value'] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-7) and r['p_value'] == pytest.approx(
        0.04767, abs=1e-5
    )
    # Newcombe's hybrid score interval from the two Wilson intervals
    (l1, u1), (l2, u2) = wilson(80, 100), wilson(90, 100)
    assert r['champion']['ci'] == pytest.approx([l1, u1], rel=1e-7) and r['challenger']['ci'] == pytest.approx(
        [l2, u2], rel=1e-7
    )
    lo, hi = 0.1 - math.sqrt((0.9 - l2) ** 2 + (u1 - 0.8) ** 2), 0.1 + math.sqrt((u2 - 0.9) ** 2 + (0.8 - l1) ** 2)
    assert r['ci'] == pytest.approx([lo, hi], rel=1e-7)
    # rows per model to detect 0.8 -> 0.9 at alpha 0.05, power 0.8
    n = (Z975 * math.sqrt(2 * 0.85 * 0.15) + Z80 * math.sqrt(0.8 * 0.2 + 0.9 * 0.1)) ** 2 / 0.1**2
    assert r['rows_per_model'] == math.ceil(n) == 199
    assert (
        r['verdict'] == 'challenger better' and r['conclusive'] and r['rows_needed'] == 0 and r['requests_needed'] == 0
    )
    assert r['excluded'] == {'unlabelled': 0, 'not_independent': 0, 'other_models': 0}
    json.dumps(r)  # plain JSON, as the gate reads it


def test_verdicts():
    r = ab_compare(binary(90, 100, 80, 100))
    assert r['verdict'] == 'champion better' and r['difference'] == pytest.approx(-0.1)
    # not significant: rows still needed to detect the observed 0.02 (above min_effect 0.01)
    r = ab_compare(binary(80, 100, 82, 100))
    n = (Z975 * math.sqrt(2 * 0.81 * 0.19) + Z80 * math.sqrt(0.8 * 0.2 + 0.82 * 0.18)) ** 2 / 0.02**2
    assert r['verdict'] == 'no difference yet' and not r['conclusive'] and r['effect'] == pytest.approx(0.02)
    assert r['rows_per_model'] == math.ceil(n) and r['rows_needed'] == math.ceil(n) - 100
    assert f'{r["rows_needed"]:,} more labelled rows' in r['message']
    assert (
        r['requests_needed'] == math.ceil(r['rows_needed'] / 2)
        and f'{r["requests_needed"]:,} requests at 2 rows each' in r['message']
    )
    # a smaller observed difference is planned at min_effect, never below
    r = ab_compare(binary(80, 100, 80, 100), min_effect=0.05)
    n = (Z975 * math.sqrt(2 * 0.825 * 0.175) + Z80 * math.sqrt(0.8 * 0.2 + 0.85 * 0.15)) ** 2 / 0.05**2
    assert r['effect'] == 0.05 and r['rows_per_model'] == math.ceil(n) and r['verdict'] == 'no difference yet'
    # significant, but below the minimum effect that matters
    big = binary(50_000, 100_000, 50_700, 100_000)
    r = ab_compare(big, min_effect=0.01)
    assert (
        r['p_value'] < 0.01
        and r['verdict'] == 'no meaningful difference'
        and r['conclusive']
        and 'significant' in r['message']
    )
    assert ab_compare(big, min_effect=0.005)['verdict'] == 'challenger better'
    # not significant, and the interval lies within +-min_effect
    r = ab_compare(binary(9_000, 10_000, 9_010, 10_000), min_effect=0.01)
    assert (
        r['p_value'] > 0.05 and -0.01 < r['ci'][0] and r['ci'][1] < 0.01 and r['verdict'] == 'no meaningful difference'
    )
    # identical models with no minimum effect: no plan is possible
    r = ab_compare(binary(80, 100, 80, 100), min_effect=0)
    assert r['verdict'] == 'no difference yet' and r['rows_needed'] is None and r['requests_needed'] is None
    assert 'minimum effect' in r['message']


def test_mae_welch_matches_hand_formulas():
    e1, e2 = np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8, 10])
    signs1, signs2 = np.array([1, -1, 1, -1]), np.array([-1, 1, -1, 1, 1])
    df = frame([('champion', '1', 0.5 + signs1 * e1, [0.5] * 4), ('challenger', '2', 0.5 + signs2 * e2, [0.5] * 5)])
    r = ab_compare(df, min_effect=0.01)
    assert r['metric'] == 'mae' and not r['higher_is_better'] and r['test'] == 'welch t' and r['ci_method'] == 'welch'
    assert r['champion']['value'] == 2.5 and r['challenger']['value'] == 6.0 and r['difference'] == 3.5
    v1, v2 = 5 / 3, 10.0  # sample variances of the absolute errors
    se = math.sqrt(v1 / 4 + v2 / 5)
    dof = (v1 / 4 + v2 / 5) ** 2 / ((v1 / 4) ** 2 / 3 + (v2 / 5) ** 2 / 4)
    assert r['statistic'] == pytest.approx(3.5 / se, rel=1e-9) and r['df'] == pytest.approx(dof, rel=1e-9)
    assert r['p_value'] == pytest.approx(t_sf2(3.5 / se, dof), abs=1e-7)
    # the interval is d +- t_crit * se: at its edge, the two-sided p-value is alpha
    half = r['ci'][1] - 3.5
    assert r['ci'][0] == pytest.approx(3.5 - half) and t_sf2(half / se, dof) == pytest.approx(0.05, abs=1e-7)
    assert r['p_value'] > 0.05 and r['verdict'] == 'no difference yet'
    assert r['rows_per_model'] == math.ceil((Z975 + Z80) ** 2 * (v1 + v2) / 3.5**2) == 8 and r['rows_needed'] == 4
    # a clear difference with lower error for the challenger: challenger better (lower is better)
    df = frame(
        [
            ('champion', '1', [2.5, 3.5, 2.5, 3.5, 2.5, 3.5], [0.5] * 6),
            ('challenger', '2', [0.75, 0.25, 0.75, 0.25, 0.75, 0.25], [0.5] * 6),
        ]
    )
    r = ab_compare(df)
    assert r['difference'] == pytest.approx(-2.25) and r['p_value'] < 0.001 and r['verdict'] == 'challenger better'


def test_rmse_delta_interval():
    e1, e2 = np.array([1.0, -2, 3, -4, 2]), np.array([1.0, 1, -1, 2, -1, 1])
    df = frame([('champion', '1', 10.5 + e1, [10.5] * 5), ('challenger', '2', 10.5 + e2, [10.5] * 6)])
    r = ab_compare(df, metric='rmse')
    s1, s2 = e1**2, e2**2
    m1, m2 = s1.mean(), s2.mean()
    assert r['champion']['value'] == pytest.approx(math.sqrt(m1)) and r['difference'] == pytest.approx(
        math.sqrt(m2) - math.sqrt(m1)
    )
    a, b = s1.var(ddof=1) / 5, s2.var(ddof=1) / 6
    dof = (a + b) ** 2 / (a * a / 4 + b * b / 5)
    assert r['ci_method'] == 'welch-delta' and r['df'] == pytest.approx(dof)
    assert r['p_value'] == pytest.approx(t_sf2((m2 - m1) / math.sqrt(a + b), dof), abs=1e-7)  # Welch on squared errors
    se = math.sqrt(a / (4 * m1) + b / (4 * m2))  # delta method: SE(RMSE) = SE(MSE) / (2 RMSE)
    half = (r['ci'][1] - r['ci'][0]) / 2
    assert r['ci'][0] + half == pytest.approx(r['difference']) and t_sf2(half / se, dof) == pytest.approx(
        0.05, abs=1e-7
    )


def by_request_frame(champion, challenger):
    "Requests given as lists of 0/1 (wrong/right) rows per model"
    rec = []
    for role, v, reqs in (('champion', '1', champion), ('challenger', '2', challenger)):
        for q, rows in enumerate(reqs):
            rec += [
                dict(
                    request_id=f'{role}-{q}',
                    row=i,
                    time=pd.Timestamp('2026-11-01', tz='UTC'),
                    role=role,
                    model_version=v,
                    prediction=1,
                    label=y,
                    label_independent=True,
                )
                for i, y in enumerate(rows)
            ]
    return pd.DataFrame(rec)


def test_by_request_matches_hand_formulas():
    champ, chall = [[1, 1], [0, 0], [1, 0], [1], [1, 1, 1]], [[1, 1, 1], [1, 0], [0], [1, 1]]
    r = ab_compare(by_request_frame(champ, chall), by_request=True, min_effect=0.01)

    def hand(reqs):
        "mean, cluster variance k/(k-1) * sum((y_i - mean * m_i)^2) / n^2, row variance s^2/n"
        rows = [y for q in reqs for y in q]
        n, k, mean = len(rows), len(reqs), sum(rows) / len(rows)
        cv = k / (k - 1) * sum((sum(q) - mean * len(q)) ** 2 for q in reqs) / n**2
        return mean, cv, sum((y - mean) ** 2 for y in rows) / (n - 1) / n

    (m1, c1, v1), (m2, c2, v2) = hand(champ), hand(chall)
    assert (m1, m2) == (7 / 10, 6 / 8) and r['unit'] == 'request' and r['test'] == 'cluster-robust t'
    assert r['champion']['requests'] == 5 and r['champion']['design_effect'] == pytest.approx(c1 / v1, abs=1e-4)
    se, dof = math.sqrt(c1 + c2), (c1 + c2) ** 2 / (c1**2 / 4 + c2**2 / 3)
    assert (
        r['difference'] == pytest.approx(m2 - m1)
        and r['statistic'] == pytest.approx((m2 - m1) / se)
        and r['df'] == pytest.approx(dof)
    )
    assert r['p_value'] == pytest.approx(t_sf2((m2 - m1) / se, dof), abs=1e-7)
    half = r['ci'][1] - r['difference']
    assert r['ci'][0] == pytest.approx(r['difference'] - half) and t_sf2(half / se, dof) == pytest.approx(
        0.05, abs=1e-7
    )
    # rows needed: the row formula inflated by the mean design effect (at least 1)
    deff = max(1, (c1 / v1 + c2 / v2) / 2)
    n = (Z975 * math.sqrt(2 * 0.725 * 0.275) + Z80 * math.sqrt(0.7 * 0.3 + 0.75 * 0.25)) ** 2 / 0.05**2  # 0.7 -> 0.75
    assert r['rows_per_model'] == math.ceil(math.ceil(n) * deff) and r['warnings'] == []
    # one row per request: requests are rows, and the test is Welch's on the 0/1 values
    one = ab_compare(by_request_frame([[1], [0], [1], [1]], [[1], [1], [0], [1], [1]]), by_request=True)
    w = welch([1, 0, 1, 1], [1, 1, 0, 1, 1])
    assert (
        one['p_value'] == pytest.approx(w['p_value'])
        and one['ci'] == pytest.approx(list(w['ci']))
        and one['champion']['design_effect'] == pytest.approx(1)
    )
    # rows of a request all right or all wrong: by rows, a warning says the intervals are too narrow
    alike = by_request_frame([[1] * 5] * 6 + [[0] * 5] * 4, [[1] * 5] * 8 + [[0] * 5] * 2)
    r = ab_compare(alike)
    assert (
        r['unit'] == 'row'
        and r['champion']['design_effect'] > 4
        and '--by-request' in r['warnings'][0]
        and 'warning' in ab_text(r)
    )
    assert ab_compare(alike, by_request=True)['p_value'] > r['p_value']
    with pytest.raises(MlopsError, match='requests'):
        ab_compare(by_request_frame([[1, 0, 1]], [[1], [0]]), by_request=True)


def test_labels_filtering_and_versions():
    extra = [
        dict(
            request_id='u',
            row=0,
            time=pd.Timestamp('2026-11-02', tz='UTC'),
            role='challenger',
            model_version='2',
            prediction=1,
            label=None,
            label_independent=None,
        ),
        dict(
            request_id='e',
            row=0,
            time=pd.Timestamp('2026-11-02', tz='UTC'),
            role='champion',
            model_version='1',
            prediction=1,
            label=1,
            label_independent=False,
        ),
    ]
    base = binary(80, 100, 90, 100)
    r = ab_compare(pd.concat([base, pd.DataFrame(extra)], ignore_index=True))
    assert r['excluded'] == {'unlabelled': 1, 'not_independent': 1, 'other_models': 0} and r['champion']['rows'] == 100
    r = ab_compare(pd.concat([base, pd.DataFrame(extra)], ignore_index=True), all_labels=True)
    assert r['labels'] == 'all' and r['champion']['rows'] == 101 and r['excluded']['not_independent'] == 0
    # an older champion version: the latest one that answered is compared, the other listed
    old = frame([('champion', '0', [1] * 10, [0] * 10)]).assign(time=pd.Timestamp('2026-10-01', tz='UTC'))
    r = ab_compare(pd.concat([old, base], ignore_index=True))
    assert r['champion']['model_version'] == '1' and r['excluded']['other_models'] == 10
    assert [(m['role'], m['model_version'], m['compared']) for m in r['models']] == [
        ('champion', '1', True),
        ('champion', '0', False),
        ('challenger', '2', True),
    ]
    assert ab_compare(pd.concat([old, base], ignore_index=True), champion='0')['champion']['value'] == 0.0
    with pytest.raises(MlopsError, match='labelled champion versions: 0, 1'):
        ab_compare(pd.concat([old, base]), champion='7')


def test_errors():
    base = binary(8, 10, 9, 10)
    with pytest.raises(MlopsError, match='no labelled predictions'):
        ab_compare(base.assign(label=None))
    with pytest.raises(MlopsError, match='--all-labels'):
        ab_compare(base.assign(label_independent=False))
    with pytest.raises(MlopsError, match='only one model'):
        ab_compare(base[base['role'] == 'champion'])
    with pytest.raises(MlopsError, match='at least 2'):
        ab_compare(pd.concat([base[base['role'] == 'champion'], base.tail(1)]))
    with pytest.raises(MlopsError, match='numeric'):
        ab_compare(base.assign(label='yes'), metric='mae')
    with pytest.raises(MlopsError, match='alpha'):
        ab_compare(base, alpha=1.5)
    with pytest.raises(MlopsError, match='metric'):
        ab_compare(base, metric='auc')


def test_correct_and_text_and_plot():
    assert correct(pd.Series([1, 0, True, 'a', 2.0, '>50K']), pd.Series(['1', 1, 1, 'a', 'b', '>50K'])).tolist() == [
        True,
        False,
        True,
        True,
        False,
        True,
    ]
    r = ab_compare(binary(80, 100, 90, 100))
    text = ab_text(r)
    assert 'challenger better' in text and '95% CI' in text and 'p 0.04767' in text
    import matplotlib

    matplotlib.use('Agg')
    fig = plot_ab(r)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ['champion v1 (100 rows)', 'challenger v2 (100 rows)']
    assert 'challenger better' in ax.get_title()


def test_cli_abtest(tmp_path):
    from mlops_nb.serving.predlog import PredictionLog
    from mlops_nb.serving.logstore import log_url, utcnow
    from mlops_nb.serving.feedback import record_feedback
    from mlops_nb.core.project import load_project

    project = make_project(tmp_path)
    res = cli(project, 'abtest')
    assert res.returncode == 1 and 'error: no labelled predictions' in res.stderr and 'Traceback' not in res.stderr

    url = log_url(load_project(project / 'settings.ini'))
    plog = PredictionLog(url, flush_s=0.01).start()
    labels = []
    # champion version 3 right on 60 of 100 rows, challenger version 4 on 90 of 100; requests of 4 rows
    for role, v, k in (('champion', '3', 60), ('challenger', '4', 90)):
        for q in range(25):
            rid = f'{role}-{q}'
            plog.add(
                'predictions',
                dict(
                    request_id=rid,
                    time=utcnow(),
                    model_name='m',
                    model_version=v,
                    role=role,
                    status=200,
                    rows=4,
                    features={'x': [1.0] * 4},
                    predictions=[1, 1, 1, 1],
                    scores=[0.9] * 4,
                    latency_ms=1.0,
                ),
            )
            labels += [{'request_id': rid, 'row': i, 'label': int(4 * q + i < k)} for i in range(4)]
    plog.add(
        'predictions',
        dict(
            request_id='refused',
            time=utcnow(),
            model_name='m',
            model_version='3',
            role='champion',
            status=422,
            rows=0,
            features=None,
            predictions=None,
            scores=None,
            latency_ms=1.0,
            error='bad',
        ),
    )
    plog.close()
    first, labels = labels[0], labels[1:]  # champion-0 row 0 gets a label that is not independent only
    assert record_feedback(url, labels, source='review', independent=True)['matched'] == 199
    # later, not independent: the row without an independent label is left out; the other keeps its independent one
    record_feedback(url, [first, {'request_id': 'champion-1', 'row': 0, 'label': 0}], source='clicks')

    res = cli(project, 'abtest', '--json', 'ab.json')
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'challenger better' in res.stdout and 'result written to ab.json' in res.stdout
    r = json.loads((project / 'ab.json').read_text())
    assert r['verdict'] == 'challenger better' and r['metric'] == 'accuracy' and r['labels'] == 'independent'
    # champion-0 row 0 has no independent label: it is left out unless --all-labels
    assert r['excluded'] == {'unlabelled': 0, 'not_independent': 1, 'other_models': 0}
    assert (r['champion']['model_version'], r['champion']['rows'], r['champion']['requests']) == ('3', 99, 25)
    assert (
        r['champion']['value'] == 59 / 99
        and r['challenger']['value'] == 0.9
        and r['difference'] == pytest.approx(0.9 - 59 / 99)
    )
    assert r['p_value'] < 1e-5 and r['ci'][0] > 0 and r['rows_needed'] == 0 and r['prediction_log'] == url

    # requests of 4 rows all right or all wrong: rows are not independent, and the result says so
    assert r['unit'] == 'row' and r['champion']['design_effect'] > 1.5 and 'warning  rows of one request' in res.stdout

    res = cli(
        project, 'abtest', '--all-labels', '--by-request', '--since', '1h', '--min-effect', '0.5', '--json', 'all.json'
    )
    assert res.returncode == 0 and 'warning: --all-labels' in res.stderr
    r = json.loads((project / 'all.json').read_text())
    assert r['labels'] == 'all' and r['unit'] == 'request' and r['champion']['rows'] == 100 and r['warnings'] == []
    # by hand: champion requests sum to 4 or 0 (p 0.6), cluster variance 25/24 * 96 / 100^2 = 0.01
    assert r['champion']['ci'] == pytest.approx(
        [0.6 - 0.1 * 2.0638985616280205, 0.6 + 0.1 * 2.0638985616280205]
    )  # t(0.975, 24)
    assert r['verdict'] == 'no meaningful difference'
    assert r['since'] is not None

    res = cli(project, 'abtest', '--until', '2000-01-01')
    assert res.returncode == 1 and 'error: no labelled predictions' in res.stderr


def test_a_better_challenger_on_live_traffic_can_be_promoted(tmp_path):
    from mlops_nb.registry.gate import history
    from mlops_nb.serving.predlog import PredictionLog
    from mlops_nb.serving.logstore import log_url, utcnow
    from mlops_nb.serving.feedback import record_feedback
    from mlops_nb.core.project import load_project
    from mlops_nb.registry.tracking import client

    project = make_project(tmp_path)
    p = load_project(project / 'settings.ini')
    c = client(p.tracking_uri)
    c.create_registered_model('acs-employment')
    for _ in range(2):
        c.create_model_version('acs-employment', source=str(tmp_path))
    c.set_registered_model_alias('acs-employment', 'champion', '1')
    url = log_url(p)
    plog = PredictionLog(url, flush_s=0.01).start()
    labels = []
    for role, v, k in (('champion', '1', 60), ('challenger', '2', 90)):
        for q in range(100):
            plog.add(
                'predictions',
                dict(
                    request_id=f'{role}-{q}',
                    time=utcnow(),
                    model_name='acs-employment',
                    model_version=v,
                    role=role,
                    status=200,
                    rows=1,
                    features={'x': [1.0]},
                    predictions=[1],
                    scores=[0.9],
                    latency_ms=1.0,
                ),
            )
            labels.append({'request_id': f'{role}-{q}', 'row': 0, 'label': int(q < k)})
    plog.close()
    record_feedback(url, labels, source='review', independent=True)

    res = cli(project, 'abtest', '--promote')
    assert res.returncode == 1 and 'a promotion needs --by NAME' in res.stderr
    res = cli(project, 'abtest', '--champion', '1', '--challenger', '1', '--promote', '--by', 'ana')
    assert res.returncode == 1 and 'Traceback' not in res.stderr
    res = cli(project, 'abtest', '--promote', '--by', 'ana')
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'version 2 of acs-employment is champion (was 1): A/B test on live traffic: accuracy +0.3000' in res.stdout
    c = client(p.tracking_uri)
    assert str(c.get_model_version_by_alias('acs-employment', 'champion').version) == '2'
    assert str(c.get_model_version_by_alias('acs-employment', 'previous-champion').version) == '1'
    e = history(c, 'acs-employment')[-1]
    assert e['event'] == 'promoted' and e['by'] == 'ana' and e['abtest']['p_value'] < 1e-4
    res = cli(project, 'abtest', '--promote', '--by', 'ana')
    assert (
        res.returncode == 1 and 'the champion of acs-employment changed since this decision was made' in res.stderr
    ), 'the evidence compared version 1 with 2: it cannot promote over another champion'
