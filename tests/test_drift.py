"""mlops_nb.monitoring.drift, drift_measures and drift_profile: exact against SciPy, planted drifts found with no false alarm, profiles as references."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

import mlops_nb.monitoring.drift_measures as measures
from mlops_nb.core.basics import MlopsError
from mlops_nb.monitoring.drift import drift_summary, drift_table
from mlops_nb.monitoring.drift_profile import reference_profile


def _exact(a, b):
    "The module's distances between two samples, on the grid of `a`, and the winsorising range"
    lo, w = measures._grid(a)
    wass, wb, ks, kb = measures._ecdf_distances(a, *measures._hist(a, lo, w), b, *measures._hist(b, lo, w), lo, w)
    return wass, wb, ks, kb, (lo, lo + measures.GRID_BINS * w)


SHAPES = {
    'normal': lambda r, n: r.normal(3, 2, n),
    'lognormal': lambda r, n: r.lognormal(0, 1.2, n),
    'student_t': lambda r, n: r.standard_t(2, n),
    'counts': lambda r, n: r.poisson(2, n).astype(float),
    'rounded': lambda r, n: np.round(r.normal(0, 1, n), 1),
}


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('n,m', [(200, 300), (5000, 3000), (1, 9)])
def test_numeric_distances_equal_scipy(shape, n, m):
    rng = np.random.default_rng(n + m)
    a, b = SHAPES[shape](rng, n), SHAPES[shape](rng, m) * 1.1 + 0.05
    wass, wb, ks, kb, (lo, hi) = _exact(a, b)
    assert wb == 0 and kb == 0, 'small data are sorted within the budget: exact'
    # the distance is that of the values winsorised to the reference's central range (the grid)
    assert wass == pytest.approx(
        stats.wasserstein_distance(np.clip(a, lo, hi), np.clip(b, lo, hi)), rel=1e-9, abs=1e-12
    )
    assert ks == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12)
    t = drift_table(pd.DataFrame({'x': a}), pd.DataFrame({'x': b}))
    assert t.ks[0] == pytest.approx(ks) and t.ks_pvalue[0] == pytest.approx(
        stats.ks_2samp(a, b, method='asymp').pvalue, rel=1e-9, abs=1e-300
    )


def test_over_the_sort_budget_the_error_bounds_hold(monkeypatch):
    "Past REFINE_BUDGET the distances come with bounds: the exact values lie within them"
    monkeypatch.setattr(measures, 'REFINE_BUDGET', 500)
    rng = np.random.default_rng(7)
    bounds = []
    for a, b in [
        (rng.normal(0, 1, 40000), rng.normal(0.01, 1, 30000)),
        (rng.pareto(1.5, 40000), rng.pareto(1.5, 40000)),
        (rng.poisson(3, 40000).astype(float), rng.poisson(3.05, 40000).astype(float)),
    ]:
        wass, wb, ks, kb, (lo, hi) = _exact(a, b)
        true_w = stats.wasserstein_distance(np.clip(a, lo, hi), np.clip(b, lo, hi))
        true_ks = stats.ks_2samp(a, b).statistic
        assert wass - 1e-9 <= true_w <= wass + wb + 1e-9 and wb < 0.01 * np.std(a)
        assert ks - 1e-12 <= true_ks <= ks + kb + 1e-12
        bounds += [wb, kb]
    assert max(bounds) > 0, 'the budget was exceeded somewhere, or this test tests nothing'


def test_integer_columns_are_exact_without_sorting():
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({'k': rng.poisson(4, 300_000)})
    cur = pd.DataFrame({'k': rng.poisson(4.1, 300_000)})
    t = drift_table(ref, cur)
    a, b = ref.k.to_numpy(float), cur.k.to_numpy(float)
    assert t.ks[0] == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12)
    lo, w = measures._grid(a)
    hi = lo + measures.GRID_BINS * w
    assert t.wasserstein[0] * t.scale[0] == pytest.approx(
        stats.wasserstein_distance(np.clip(a, lo, hi), np.clip(b, lo, hi)), rel=1e-9
    )
    assert pd.isna(t.note[0])


def test_categorical_measures_equal_scipy():
    rng = np.random.default_rng(0)
    r = pd.Series(rng.choice(list('abcde'), 3000, p=[0.4, 0.3, 0.15, 0.1, 0.05]), dtype='category')
    c = pd.Series(rng.choice(list('abcdf'), 2000, p=[0.35, 0.3, 0.2, 0.1, 0.05]))  # 'e' gone, 'f' new
    t = drift_table(pd.DataFrame({'c': r}), pd.DataFrame({'c': c}))
    cats = list('abcdef')
    rc = r.value_counts().reindex(cats, fill_value=0).to_numpy()
    cc = c.value_counts().reindex(cats, fill_value=0).to_numpy()
    assert t.js[0] == pytest.approx(jensenshannon(rc / rc.sum(), cc / cc.sum(), base=2), rel=1e-12)
    chi = stats.chi2_contingency(np.vstack([rc, cc]), correction=False)
    assert t.chi2[0] == pytest.approx(chi.statistic, rel=1e-12) and t.chi2_pvalue[0] == pytest.approx(
        chi.pvalue, rel=1e-9, abs=1e-300
    )
    eps = measures.PSI_EPS
    p, q = (rc / rc.sum() + eps) / (1 + 6 * eps), (cc / cc.sum() + eps) / (1 + 6 * eps)
    assert t.psi[0] == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)
    assert t.new_share[0] == pytest.approx((c == 'f').mean()) and t.new_categories[0] == 'f'
    # the same test as SciPy's chisquare over the 2 x k cells, with the homogeneity test's expected counts and k - 1 degrees of freedom
    table = np.vstack([rc, cc])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    sq = stats.chisquare(table.ravel(), expected.ravel(), ddof=len(cats))
    assert t.chi2[0] == pytest.approx(sq.statistic, rel=1e-12) and t.chi2_pvalue[0] == pytest.approx(
        sq.pvalue, rel=1e-9, abs=1e-300
    )


def _frame(rows, seed, drifted):
    rng = np.random.default_rng(seed)
    cat = lambda k, p=None: pd.Categorical.from_codes(
        rng.choice(k, rows, p=p).astype(np.int8), [f'v{i}' for i in range(k)]
    )
    p8 = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.05])
    d = {
        'mean_shift': rng.standard_t(3, rows) + (0.15 if drifted else 0),  # 0.13 robust sd
        'variance': rng.normal(0, 1.15 if drifted else 1, rows),
        'stable_lognormal': rng.lognormal(0, 1, rows),
        'stable_pareto': rng.pareto(1.5, rows),
        'stable_counts': rng.poisson(3, rows),
        'shares': cat(8, p8 + (np.array([-0.1, 0, 0, 0, 0.05, 0.05, 0, 0]) if drifted else 0)),
        'stable_cat': cat(20),
    }
    new = rng.choice(
        ['a', 'b', 'c', 'NEW'] if drifted else ['a', 'b', 'c'],
        rows,
        p=[0.4, 0.35, 0.23, 0.02] if drifted else [0.4, 0.35, 0.25],
    )
    d['new_category'] = pd.Series(new, dtype='str')
    return pd.DataFrame(d)


@pytest.fixture(scope='module')
def frames():
    return _frame(150_000, 1, False), _frame(150_000, 2, True), _frame(150_000, 3, False)


def test_planted_drifts_found_and_no_false_alarm(frames):
    ref, cur, null = frames
    t = drift_table(ref, cur).set_index('column')
    planted = {'mean_shift': 'wasserstein', 'variance': 'wasserstein', 'shares': 'js', 'new_category': 'new_share'}
    assert set(drift_summary(t.reset_index())['drifted']) == set(planted), t[['drift', 'measure', 'value']]
    for c, measure in planted.items():
        assert t.loc[c, 'measure'] == measure
    assert (
        t.loc[[c for c in t.index if c not in planted], 'value']
        < 0.5 * t.loc[[c for c in t.index if c not in planted], 'threshold']
    ).all()
    # p-values are reported but do not decide: a stable column can have a small one at this size without drifting
    tn = drift_table(ref, null)
    assert not tn.drift.any(), tn[['column', 'measure', 'value']]
    assert drift_summary(tn) == {'columns': 8, 'n_drifted': 0, 'drift_share': 0.0, 'drifted': []}


def test_profile_as_reference_agrees(frames):
    ref, cur, _ = frames
    prof = json.loads(json.dumps(reference_profile(ref)))  # as saved and read back
    assert len(json.dumps(prof)) < 100_000 * len(ref.columns)
    full, fast = drift_table(ref, cur), drift_table(prof, cur)
    assert full.drift.tolist() == fast.drift.tolist() and full.measure.tolist() == fast.measure.tolist()
    num = full.kind == 'numeric'
    assert np.allclose(full.loc[num, 'psi'], fast.loc[num, 'psi'], rtol=1e-9)  # same grid, same counts
    assert (full.loc[num, 'wasserstein'] - fast.loc[num, 'wasserstein']).abs().max() < 0.01
    assert (full.loc[num, 'ks'] - fast.loc[num, 'ks']).abs().max() < 0.002
    cat = ~num
    for k in ('psi', 'js', 'chi2', 'new_share'):
        assert np.allclose(full.loc[cat, k], fast.loc[cat, k], rtol=1e-12)


def test_thresholds_and_errors():
    rng = np.random.default_rng(5)
    ref, cur = pd.DataFrame({'x': rng.normal(0, 1, 20000)}), pd.DataFrame({'x': rng.normal(0.05, 1, 20000)})
    assert not drift_table(ref, cur).drift[0]
    t = drift_table(ref, cur, thresholds={'wasserstein': 0.02})
    assert t.drift[0] and t.threshold[0] == 0.02
    t = drift_table(ref, cur, thresholds={'wasserstein': None, 'psi': None, 'ks': 0.01})
    assert t.measure[0] == 'ks' and t.drift[0]
    with pytest.raises(MlopsError, match='unknown drift measure'):
        drift_table(ref, cur, thresholds={'wass': 0.1})
    with pytest.raises(MlopsError, match="'x'"):
        drift_table(ref, cur.assign(x=cur.x.astype(str)))
    with pytest.raises(MlopsError, match='nope'):
        drift_table(ref, cur, columns=['nope'])
    t = drift_table(ref.assign(x=np.nan), cur)  # all null on one side: reported, not a crash
    assert not t.drift[0] and t.null_share_ref[0] == 1 and 'no values' in t.note[0]
