"""Validate a 1,000,000-row batch of the default (ACS employment) schema against the saved schema.

mlops-nb's `validate_batch` against the schema saved by the validate stage (inferred from the 2015 training
data); the batch is 1,000,000 rows drawn from the 2016-2018 surveys (later data, as a retraining or
monitoring batch would be), with a few injected anomalies so that every check finds something to count.
Reported: rows per second (best and median of --repeat runs), peak memory allocated during one validation
(tracemalloc, which sees NumPy's and pandas' buffers) against the batch's in-memory size, and the same for
pandera with the equivalent checks (dtype, nullability, range, category domain, id uniqueness, labels),
if pandera is installed (`pip install pandera`; it is a benchmark dependency only). Also the latency of
one call on a one-row serving payload, which is what the model server pays per request.

Goal (issue 3): at least 1,000,000 rows/s, and peak memory under 3x the batch.

Usage: python benchmarks/validate.py [--rows N] [--repeat K]
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np


def machine():
    mem = (
        next((l.split()[1] for l in open('/proc/meminfo') if l.startswith('MemTotal')), '?')
        if os.path.exists('/proc/meminfo')
        else '?'
    )
    cpu = (
        next(
            (l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')),
            platform.processor(),
        )
        if os.path.exists('/proc/cpuinfo')
        else platform.processor()
    )
    print(
        f'machine: {platform.platform()}, {os.cpu_count()} cores ({cpu}), {int(mem) // 1024**2 if mem != "?" else "?"} GiB'
    )

    def v(p):
        try:
            return version(p)
        except PackageNotFoundError:
            return 'not installed'

    print(
        'versions: python '
        + platform.python_version()
        + ', '
        + ', '.join(f'{p} {v(p)}' for p in ('mlops-nb', 'pandas', 'numpy', 'pyarrow', 'pandera'))
    )


def make_batch(rows: int, seed: int = 0):
    "`(saved schema, batch)`: the schema the validate stage saves for the default data, and a later batch of `rows` rows"
    from mlops_nb.stages.sources import bundled
    from mlops_nb.stages.contract import infer_schema

    train = bundled('acs_employment_ma', '2015')
    path = Path(tempfile.mkdtemp()) / 'schema.json'
    path.write_text(json.dumps(infer_schema(train, 'employed', 'id', 'year')))
    schema = json.loads(path.read_text())  # as saved, then read back: what a later run compares with
    later = bundled('acs_employment_ma', '2016,2017,2018')
    rng = np.random.default_rng(seed)
    batch = later.iloc[rng.integers(0, len(later), rows)].reset_index(drop=True)
    batch['id'] = np.arange(rows, dtype='int64')
    every = max(rows // 1000, 1)  # 0.1% of the rows carry an anomaly the checks must count
    batch.loc[::every, 'AGEP'] = 120.0
    batch['SCHL'] = batch['SCHL'].cat.add_categories(['99'])
    batch.loc[1::every, 'SCHL'] = '99'
    batch.loc[2::every, 'id'] = 0
    return schema, batch


def pandera_schema(schema: dict):
    "The same checks as a pandera DataFrameSchema"
    import pandera.pandas as pa

    cols = {}
    for c, col in schema['columns'].items():
        checks = []
        if col.get('min') is not None and col['kind'] in ('integer', 'float') and col['role'] not in ('id', 'time'):
            checks.append(pa.Check.in_range(col['min'], col['max']))
        if col.get('categories') is not None:
            checks.append(pa.Check.isin(col['categories']))
        if col['role'] == 'target':
            checks.append(pa.Check.isin([0, 1]))
        dtype = 'category' if col['dtype'] == 'category' else col['dtype']
        cols[c] = pa.Column(
            dtype,
            checks=checks,
            nullable=col['nullable'] if col['role'] != 'target' else False,
            unique=col['role'] == 'id',
            coerce=False,
        )
    return pa.DataFrameSchema(cols, strict=False)


def run_pandera(ps, batch):
    import pandera.errors

    try:
        ps.validate(batch, lazy=True)
    except pandera.errors.SchemaErrors as e:
        return len(e.failure_cases)
    return 0


def timed(fn, repeat: int):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def peak_memory(fn):
    "Peak bytes allocated while `fn` runs (tracemalloc), over what was allocated before"
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--repeat', type=int, default=5)
    args = ap.parse_args()
    from mlops_nb.stages.anomalies import validate_batch

    machine()
    schema, batch = make_batch(args.rows)
    size = int(batch.memory_usage(deep=True, index=True).sum())
    print(
        f'batch: {len(batch):,} rows x {batch.shape[1]} columns, {size / 2**20:.1f} MiB in memory; '
        f'schema: {len(schema["columns"])} columns from {schema["rows"]:,} training rows'
    )
    print(f'goal: >= 1,000,000 rows/s and peak memory < 3x the batch ({3 * size / 2**20:.1f} MiB)\n')
    results = []
    validate_batch(batch.head(1000), schema)  # warm-up: imports and first-call costs
    times, anomalies = timed(lambda: validate_batch(batch, schema), args.repeat)
    results.append(
        (
            'mlops-nb validate_batch',
            times,
            peak_memory(lambda: validate_batch(batch, schema)),
            f'{len(anomalies)} anomalies: ' + ', '.join(f'{a["column"]}:{a["kind"]}' for a in anomalies),
        )
    )
    try:
        import pandera  # noqa: F401

        ps = pandera_schema(schema)
        run_pandera(ps, batch.head(1000))
        times, failures = timed(lambda: run_pandera(ps, batch), args.repeat)
        results.append(
            (
                f'pandera {version("pandera")} (lazy)',
                times,
                peak_memory(lambda: run_pandera(ps, batch)),
                f'{failures:,} failure cases (one row each)',
            )
        )
    except ImportError:
        print('pandera is not installed: pip install pandera to compare with it\n')
    print(
        f'{"validator":<28} {"best rows/s":>12} {"median rows/s":>14} {"best s":>8} {"peak MiB":>9} {"x batch":>8}  found'
    )
    for name, times, peak, found in results:
        print(
            f'{name:<28} {len(batch) / min(times):>12,.0f} {len(batch) / statistics.median(times):>14,.0f} {min(times):>8.3f} '
            f'{peak / 2**20:>9.1f} {peak / size:>8.2f}  {found}'
        )
    payload = (
        batch.drop(columns=['id', 'year', 'employed'])
        .head(1)
        .astype({c: str for c in batch.select_dtypes('category') if c in batch})
    )
    t, _ = timed(lambda: validate_batch(payload, schema, serving=True), 200)
    print(
        f'\none-row serving payload (serving=True): median {statistics.median(t) * 1e3:.2f} ms per call, p95 {sorted(t)[189] * 1e3:.2f} ms'
    )
    best = len(batch) / min(results[0][1])
    ok = best >= 1_000_000 and results[0][2] < 3 * size
    print(
        f'\nmlops-nb: {best:,.0f} rows/s, peak {results[0][2] / size:.2f}x the batch: goal {"met" if ok else "NOT met"}'
    )


if __name__ == '__main__':
    main()
