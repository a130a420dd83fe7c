"""Data drift on a synthetic reference/current pair: mlops-nb's `drift_table` against Evidently's DataDriftPreset.

The pair (fixed seed): 20 columns, 14 numeric of varied shapes (normal, lognormal, exponential, uniform, Weibull,
gamma, beta, Student-t, Pareto, bimodal, integer counts, ages, a column with 5% nulls) and 6 categorical with
3 to 30 categories. The current data has drift planted in 5 known columns:

- `n_student_t`: a small mean shift (+0.15, about 0.13 robust standard deviations of this heavy-tailed column);
- `n_normal`: a variance change (standard deviation x 1.15, same mean);
- `c_8`: a category share change (10 of the commonest category's 31 points move to two small ones);
- `c_12`: a new category (1.5% of the rows);
- `n_counts`: integer counts whose rate rises by 10% (Poisson 3 -> 3.3).

The null pair draws the current data from the reference's distribution (another seed): every alarm on it is
false. Both tools get the same frames (pandas categoricals for the categorical columns) and are told which
columns are numerical and which categorical; Evidently runs with its defaults otherwise.

Each measurement runs in a fresh subprocess that first builds the data, then measures the call alone: wall
time, and peak extra memory as the rise of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs before the call) over its resident set before the call (after glibc's malloc_trim, so
that heap memory freed while building the data is not silently reused and left uncounted). tracemalloc would miss memory
that NumPy's threads or C libraries allocate outside Python's allocator hooks.

Evidently 0.7 does not import with pandas 3, which mlops-nb uses: install it in its own environment and pass
its interpreter, e.g.
    python -m venv /tmp/evvenv && /tmp/evvenv/bin/pip install evidently==0.7.23 "pandas<3" psutil
    python benchmarks/drift.py --evidently-python /tmp/evvenv/bin/python
The Evidently side only needs numpy and pandas besides Evidently (this file does not import mlops_nb there).
Evidently took 731 s and 3.7 GB at 5,000,000 rows here, so it runs only up to --evidently-max-rows
(default 1,000,000); the output says which sizes it skipped.

Goals (issue 6): >= 30x faster than Evidently at 1,000,000 rows; 5,000,000 rows in < 10 s with extra memory
under the size of the data; all 5 planted drifts found; no false alarm on the null pair at any size.

Usage: python benchmarks/drift.py [--sizes 100000,1000000,5000000] [--evidently-python PATH]
                                  [--evidently-max-rows 1000000] [--repeat 1]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import pandas as pd

PLANTED = {
    'n_student_t': 'small mean shift',
    'n_normal': 'variance change',
    'c_8': 'category share change',
    'c_12': 'new category',
    'n_counts': 'count rate +10%',
}
NUMERIC = [
    'n_normal',
    'n_lognormal',
    'n_exponential',
    'n_uniform',
    'n_weibull',
    'n_gamma',
    'n_beta',
    'n_student_t',
    'n_pareto',
    'n_bimodal',
    'n_counts',
    'n_counts_wide',
    'n_age',
    'n_with_nulls',
]
CATEGORICAL = {'c_3': 3, 'c_5': 5, 'c_8': 8, 'c_12': 12, 'c_20': 20, 'c_30': 30}


def _shares(k: int):
    "Zipf-like shares of k categories"
    p = 1 / np.arange(1, k + 1) ** 0.8
    return p / p.sum()


def make_frame(rows: int, seed: int, drift: bool) -> pd.DataFrame:
    "One side of the pair: the reference distribution, or (drift=True) the current one with the 5 planted drifts"
    rng = np.random.default_rng(seed)
    d = {}
    d['n_normal'] = rng.normal(50, 10 * (1.15 if drift else 1), rows)
    d['n_lognormal'] = rng.lognormal(3, 0.8, rows)
    d['n_exponential'] = rng.exponential(2, rows)
    d['n_uniform'] = rng.uniform(0, 100, rows)
    d['n_weibull'] = 10 * rng.weibull(1.5, rows)
    d['n_gamma'] = rng.gamma(2, 1, rows)
    d['n_beta'] = rng.beta(2, 5, rows)
    d['n_student_t'] = rng.standard_t(3, rows) + (0.15 if drift else 0)
    d['n_pareto'] = rng.pareto(1.5, rows) + 1
    d['n_bimodal'] = np.where(rng.random(rows) < 0.5, rng.normal(-2, 0.7, rows), rng.normal(2, 0.7, rows))
    d['n_counts'] = rng.poisson(3.3 if drift else 3, rows)
    d['n_counts_wide'] = rng.negative_binomial(5, 0.1, rows)
    d['n_age'] = rng.integers(18, 91, rows)
    x = rng.normal(0, 1, rows)
    x[rng.random(rows) < 0.05] = np.nan
    d['n_with_nulls'] = x
    for c, k in CATEGORICAL.items():
        p = _shares(k)
        names = [f'{c}_v{i}' for i in range(k)]
        if drift and c == 'c_8':
            p = p.copy()
            p[0] -= 0.10
            p[5] += 0.05
            p[6] += 0.05
        if drift and c == 'c_12':
            p = np.r_[p * 0.985, 0.015]
            names = names + ['NEW']
        codes = rng.choice(len(p), rows, p=p).astype(np.int8)
        d[c] = pd.Categorical.from_codes(codes, categories=names)
    return pd.DataFrame(d)


def make_pair(rows: int, pair: str):
    "`(reference, current)`: pair 'drift' (5 planted drifts) or 'null' (same distribution)"
    return make_frame(rows, 1, False), make_frame(rows, 2, pair == 'drift')


# ---- measuring one call in this (fresh) process ----


def _status(key: str) -> int:
    "A /proc/self/status figure in bytes"
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    "Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed"
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def run_mlops(ref, cur):
    from mlops_nb.monitoring.drift import drift_table

    t = drift_table(ref, cur)
    return t.loc[t['drift'], 'column'].tolist(), {
        r.column: [r.measure, round(float(r.value), 4)] for r in t.itertuples()
    }


def run_evidently(ref, cur):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(numerical_columns=NUMERIC, categorical_columns=list(CATEGORICAL))
    snap = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(cur, data_definition=dd),
        reference_data=Dataset.from_pandas(ref, data_definition=dd),
    )
    drifted, values = [], {}
    for m in snap.dict()['metrics']:
        cfg = m.get('config', {})
        if not cfg.get('type', '').endswith('ValueDrift'):
            continue
        method, th, v = cfg.get('method', ''), cfg.get('threshold'), m['value']
        # distances drift at or above their threshold, p-value tests below it
        is_drift = v >= th if ('distance' in method.lower() or 'psi' in method.lower()) else v < th
        values[cfg['column']] = [method, round(float(v), 4)]
        if is_drift:
            drifted.append(cfg['column'])
    return drifted, values


def worker(tool: str, rows: int, pair: str):
    "Build the pair, measure one call, print a JSON line"
    import gc
    from importlib.metadata import version

    ref, cur = make_pair(rows, pair)
    data_bytes = int(ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum())
    fn = run_mlops if tool == 'mlops-nb' else run_evidently
    if tool == 'evidently':
        import evidently  # noqa: F401  (import time is not the call's)
    else:
        import mlops_nb.monitoring.drift, scipy.stats  # noqa: F401,E401  (SciPy is imported lazily; Evidently imports it up front)
    gc.collect()
    try:  # hand freed heap memory (from building the data) back, so the call's peak counts what it needs, not what it reuses
        import ctypes

        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass
    base = _status('VmRSS')
    exact_peak = _reset_peak()
    t0 = time.perf_counter()
    drifted, values = fn(ref, cur)
    seconds = time.perf_counter() - t0
    peak = _status('VmHWM') - base
    vers = {
        p: version(p) for p in (['evidently'] if tool == 'evidently' else ['mlops-nb', 'scipy']) + ['pandas', 'numpy']
    }
    print(
        json.dumps(
            {
                'tool': tool,
                'rows': rows,
                'pair': pair,
                'seconds': seconds,
                'peak_extra': peak,
                'peak_exact': exact_peak,
                'data_bytes': data_bytes,
                'drifted': drifted,
                'values': values,
                'versions': vers,
            }
        )
    )


# ---- the driver ----


def machine():
    mem = next((l.split()[1] for l in open('/proc/meminfo') if l.startswith('MemTotal')), '0')
    cpu = next(
        (l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()
    )
    return f'{platform.platform()}, {os.cpu_count()} cores ({cpu}), {int(mem) / 1024**2:.0f} GiB RAM'


def measure(python: str, tool: str, rows: int, pair: str, timeout: float):
    here = os.path.abspath(__file__)
    res = subprocess.run(
        [python, here, '--worker', tool, '--rows', str(rows), '--pair', pair],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, 'PYTHONWARNINGS': 'ignore'},
    )
    if res.returncode != 0:
        return {'tool': tool, 'rows': rows, 'pair': pair, 'error': (res.stderr.strip().splitlines() or ['?'])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='100000,1000000,5000000', help='comma-separated row counts (each side)')
    ap.add_argument('--evidently-python', default=sys.executable, help='interpreter with Evidently installed')
    ap.add_argument(
        '--evidently-max-rows',
        type=int,
        default=1_000_000,
        help='skip Evidently above this size (it took 731 s at 5,000,000)',
    )
    ap.add_argument('--no-evidently', action='store_true', help='measure mlops-nb only')
    ap.add_argument(
        '--repeat', type=int, default=1, help='mlops-nb measurements per size and pair (the best is reported)'
    )
    ap.add_argument('--timeout', type=float, default=3600, help='seconds allowed for one measurement')
    ap.add_argument('--worker', choices=['mlops-nb', 'evidently'], help=argparse.SUPPRESS)
    ap.add_argument('--rows', type=int, help=argparse.SUPPRESS)
    ap.add_argument('--pair', choices=['drift', 'null'], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.rows, args.pair)

    sizes = [int(s.replace('_', '')) for s in args.sizes.split(',') if s.strip()]
    print(f'machine: {machine()} (shared with other work while measuring: times are upper bounds)')
    print(f'load average before: {os.getloadavg()[0]:.2f}')
    print('planted drifts: ' + ', '.join(f'{c} ({w})' for c, w in PLANTED.items()))
    if not args.no_evidently:
        print(
            f'Evidently: DataDriftPreset() with its defaults, interpreter {args.evidently_python}, '
            f'up to {args.evidently_max_rows:,} rows (--evidently-max-rows)'
        )
    results, versions = [], {}
    header = f'{"rows":>10} {"pair":>5} {"tool":>9} {"time s":>9} {"peak extra MB":>14} {"data MB":>8} {"found":>6} {"false alarms":>13}  drifted'
    print(header)
    for rows in sizes:
        for pair in ('drift', 'null'):
            runs = []
            for tool in ('mlops-nb', 'evidently'):
                if tool == 'evidently' and (args.no_evidently or rows > args.evidently_max_rows):
                    print(
                        f'{rows:>10} {pair:>5} {tool:>9}  skipped (above --evidently-max-rows {args.evidently_max_rows:,})'
                        if not args.no_evidently
                        else '',
                        end='\n' if not args.no_evidently else '',
                    )
                    continue
                python = sys.executable if tool == 'mlops-nb' else args.evidently_python
                reps = [
                    measure(python, tool, rows, pair, args.timeout)
                    for _ in range(args.repeat if tool == 'mlops-nb' else 1)
                ]
                ok = [r for r in reps if 'error' not in r]
                r = min(ok, key=lambda r: r['seconds']) if ok else reps[0]
                if 'error' in r:
                    print(f'{rows:>10} {pair:>5} {tool:>9}  failed: {r["error"]}')
                    continue
                versions.update(
                    {f'{k} ({tool})' if k in ('pandas', 'numpy') else k: v for k, v in r['versions'].items()}
                )
                found = [c for c in r['drifted'] if c in PLANTED] if pair == 'drift' else []
                false = [c for c in r['drifted'] if c not in PLANTED or pair == 'null']
                r.update(found=len(found), false=len(false))
                print(
                    f'{rows:>10} {pair:>5} {tool:>9} {r["seconds"]:>9.2f} {r["peak_extra"] / 2**20:>14.0f} {r["data_bytes"] / 2**20:>8.0f} '
                    f'{(str(len(found)) + "/5") if pair == "drift" else "-":>6} {len(false):>13}  {", ".join(r["drifted"]) or "-"}',
                    flush=True,
                )
                runs.append(r)
                results.append(r)
            if len(runs) == 2:
                print(
                    f'{"":>10} {"":>5} {"ratio":>9} {runs[1]["seconds"] / runs[0]["seconds"]:>8.0f}x '
                    f'{runs[1]["peak_extra"] / max(runs[0]["peak_extra"], 1):>13.1f}x   (Evidently / mlops-nb)'
                )
    print(
        'versions: python '
        + platform.python_version()
        + ', '
        + ', '.join(f'{k} {v}' for k, v in sorted(versions.items()))
    )
    # the effect sizes on the planted columns, so a reader sees by how much each tool found or missed them
    for r in results:
        if r['pair'] == 'drift' and r['rows'] == max(x['rows'] for x in results if x['tool'] == r['tool']):
            print(
                f'{r["tool"]} at {r["rows"]:,} rows, planted columns: '
                + '; '.join(f'{c} {r["values"][c][0]} {r["values"][c][1]}' for c in PLANTED if c in r['values'])
            )
    goals = []
    mine = {(r['rows'], r['pair']): r for r in results if r['tool'] == 'mlops-nb'}
    ev = {(r['rows'], r['pair']): r for r in results if r['tool'] == 'evidently'}
    if (1_000_000, 'drift') in mine and (1_000_000, 'drift') in ev:
        x = ev[1_000_000, 'drift']['seconds'] / mine[1_000_000, 'drift']['seconds']
        goals.append(
            f'{x:.0f}x faster than Evidently at 1,000,000 rows (goal >= 30x): {"met" if x >= 30 else "NOT met"}'
        )
    if (5_000_000, 'drift') in mine:
        r = mine[5_000_000, 'drift']
        goals.append(
            f'5,000,000 rows in {r["seconds"]:.1f} s (goal < 10 s), extra memory {r["peak_extra"] / 2**20:.0f} MB vs data '
            f'{r["data_bytes"] / 2**20:.0f} MB: {"met" if r["seconds"] < 10 and r["peak_extra"] < r["data_bytes"] else "NOT met"}'
        )
    allfound = all(r['found'] == 5 for (n, p), r in mine.items() if p == 'drift')
    nofalse = all(r['false'] == 0 for r in mine.values())
    goals.append(
        f'all 5 planted drifts found at every size: {"met" if allfound else "NOT met"}; '
        f'no false alarm at any size (null pair and undrifted columns): {"met" if nofalse else "NOT met"}'
    )
    print('goals: ' + '\n       '.join(goals))


if __name__ == '__main__':
    main()
