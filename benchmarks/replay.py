"""Continuous learning on your own data: how long `mlops-nb replay --data FILE --batch 1000` takes on a stream.

A synthetic stream of 20,000 rows and 10 columns (6 numeric and 3 categorical features, the target), in row
order (no time column), with a concept change planted at row 12,000, is written as a CSV; a project is made
for it with `mlops-nb init` (its default model: the train notebook's boosted trees); then, for each task,
`mlops-nb replay --data stream.csv --batch 1000` runs in a new process, as a user runs it: the wall time
(start-up, the data read and checked, the stage's kernel, the three policies over 16 batches, the plot and
the report) and the stage's own time, with the policies' summary. Goal on a 2-core machine: under 60 s.

Usage: python benchmarks/replay.py [--rows 20000] [--batch 1000] [--tasks classification,regression]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_overhead import machine  # noqa: E402

MLOPS_NB = Path(sys.executable).parent / 'mlops-nb'


def stream(rows: int, task: str, change: int, seed: int = 0):
    "10 columns: 6 numeric and 3 categorical features and the target, whose relation to x0 and region flips at row `change`"
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    region, plan, device = (
        rng.choice(list('abcdefgh'), rows),
        rng.choice(['basic', 'plus', 'pro'], rows),
        rng.choice(['ios', 'android', 'web'], rows),
    )
    flip = np.where(np.arange(rows) < change, 1.0, -1.0)
    signal = (
        2 * flip * x[:, 0]
        + x[:, 1]
        - 0.5 * x[:, 2]
        + flip * np.isin(region, list('abc'))
        + 0.5 * (plan == 'pro')
        + rng.normal(0, 0.5, rows)
    )
    df = pd.DataFrame(x.round(4), columns=[f'x{i}' for i in range(6)]).assign(region=region, plan=plan, device=device)
    df['target'] = (signal > 0).astype(int) if task == 'classification' else signal.round(4)
    return df


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=20_000)
    ap.add_argument('--batch', type=int, default=1000)
    ap.add_argument('--tasks', default='classification,regression')
    args = ap.parse_args()
    machine()
    from importlib.metadata import version

    print(
        f'versions: scikit-learn {version("scikit-learn")}, pandas {version("pandas")}, numpy {version("numpy")}; '
        f'load average before: {", ".join(f"{v:.2f}" for v in os.getloadavg())}'
    )
    from mlops_nb.pipeline.scaffold import init_project

    for task in args.tasks.split(','):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / 'stream.csv'
            stream(args.rows, task, int(args.rows * 0.6)).to_csv(data, index=False)
            proj = init_project(Path(tmp) / 'project', str(data), 'target', echo=lambda *_: None)
            t0 = time.perf_counter()
            res = subprocess.run(
                [str(MLOPS_NB), 'replay', '--data', str(data), '--batch', str(args.batch)],
                cwd=proj,
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - t0
            if res.returncode:
                sys.exit(f'mlops-nb replay failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}')
            m = json.loads(next((proj / 'runs').glob('*/manifest.json')).read_text())
            rep = m['stages'][0]['result']
            pol = {p['policy']: p for p in rep['policies']}
            metric = rep['metric']
            print(
                f'\n{task}: {args.rows:,} rows x {pd.read_csv(data, nrows=1).shape[1]} columns, batches of {args.batch:,} rows '
                f'({rep["batches"]} batches, {rep["batches"] - rep["first_batches"]} replayed), model {rep["model"]}'
            )
            print(
                f'  mlops-nb replay wall time {wall:.1f} s (goal < 60 s); the stage {m["stages"][0]["duration_s"]:.1f} s, '
                f'of which the replay itself {rep["seconds"]:.1f} s'
            )
            print(
                '  '
                + '; '.join(
                    f'{p} {metric} {pol[p][metric]:.4f}, {pol[p]["retrains"]} retrains'
                    for p in ('never', 'periodic', 'monitor')
                )
            )
            print(
                f'  monitor retrained after batches {", ".join(str(r["batch"]) for r in rep["retrains"] if r["policy"] == "monitor") or "none"} '
                f'(the change is at row {int(args.rows * 0.6):,}: batch {int(args.rows * 0.6) // args.batch})'
            )
    print(f'load average after: {", ".join(f"{v:.2f}" for v in os.getloadavg())}')


if __name__ == '__main__':
    main()
