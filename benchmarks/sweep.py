"""A 16-combination sweep, one after another and on a Dask LocalCluster of N workers, measured in one run on this machine.

Both sweeps run the same grid (train.learning_rate x train.max_leaf_nodes, 4 x 4 by default) on the same project and
data: the shared stages (ingest, validate, features) once, 16 child runs (train, evaluate), then audit and register
for the best. The children are the part that runs in parallel; their wall time gives the speed-up and the scaling
efficiency (speed-up / N). The whole sweep's wall time (shared and best stages included, and the cluster's start)
is printed beside it. Checks that both executors rank the same combinations with the same metrics.

Usage: python benchmarks/sweep.py [--max-rows N] [--workers N] [--dask-first] [--repeat K] [--learning-rates 0.03,0.1,0.2,0.3] [--leaves 7,15,31,63]
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine():
    mem = next((l.split()[1] for l in open('/proc/meminfo') if l.startswith('MemTotal')), '?') if os.path.exists('/proc/meminfo') else '?'
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) \
        if os.path.exists('/proc/cpuinfo') else platform.processor()
    print(f'machine: {platform.platform()}, {os.cpu_count()} cores ({cpu}), {int(mem) // 1024**2 if mem != "?" else "?"} GiB, '
          f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())} at start')
    print('versions: python ' + platform.python_version() + ', ' +
          ', '.join(f'{p} {version(p)}' for p in ('mlops-nb', 'dask', 'distributed', 'papermill', 'ipykernel', 'mlflow', 'scikit-learn')))


def project(tmp: Path, max_rows: int):
    shutil.copytree(ROOT / 'notebooks' / 'stages', tmp / 'notebooks' / 'stages')
    (tmp / 'settings.ini').write_text((ROOT / 'settings.ini').read_text().replace('max_rows = 0', f'max_rows = {max_rows}'))
    return tmp


def sweep(proj: Path, axes, executor: str, workers: int | None):
    from mlops_nb.project import load_project
    from mlops_nb.runner import read_manifest
    from mlops_nb.sweep import run_sweep
    t0 = time.perf_counter()
    run_dir = run_sweep(load_project(proj / 'settings.ini'), axes, executor=executor, workers=workers, echo=lambda *_: None, progress=False)
    wall = time.perf_counter() - t0
    m = read_manifest(run_dir)
    table = json.loads((run_dir / 'artifacts/sweep/results.json').read_text())['table']
    return wall, m['sweep'], table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--max-rows', type=int, default=0, help='rows of the default data to use; 0: all (default)')
    ap.add_argument('--workers', type=int, default=2, help='Dask worker processes (default 2)')
    ap.add_argument('--learning-rates', default='0.03,0.1,0.2,0.3')
    ap.add_argument('--leaves', default='7,15,31,63')
    ap.add_argument('--dask-first', action='store_true', help='run the Dask sweep first')
    ap.add_argument('--repeat', type=int, default=1, help='sweeps per executor, in alternating order (2: local, dask, dask, local), '
                    'so that load from other processes that rises or falls during the run weighs on both alike (default 1)')
    args = ap.parse_args()
    machine()
    from mlops_nb.sweep import parse_axis
    axes = [parse_axis(f'train.learning_rate={args.learning_rates}'), parse_axis(f'train.max_leaf_nodes={args.leaves}')]
    n = len(axes[0][1]) * len(axes[1][1])
    print(f'grid: {n} combinations (train.learning_rate x train.max_leaf_nodes), max_rows {args.max_rows or "all"}')
    with tempfile.TemporaryDirectory() as tmp:
        proj = project(Path(tmp), args.max_rows)
        res = {'local': [], 'dask': []}
        order = [('local', None), ('dask', args.workers)]
        order = order[::-1] if args.dask_first else order
        for executor, workers in [o for r in range(args.repeat) for o in (order if r % 2 == 0 else order[::-1])]:
            load = os.getloadavg()[0]
            wall, sw, table = sweep(proj, axes, executor, workers)
            res[executor].append((wall, sw, table))
            per = [c['duration_s'] for c in sw['children'] if c.get('duration_s')]
            print(f"{executor:<6}{'' if workers is None else f' ({workers} workers)':<12} sweep {wall:7.1f} s   children {sw['children_s']:7.1f} s   "
                  f"per child {sum(per) / len(per):5.1f} s   best {sw['best']['run_id'][-3:]} {sw['best']['combination']} "
                  f"roc_auc {sw['best']['roc_auc']:.4f}   load {load:.2f} -> {os.getloadavg()[0]:.2f}")
    metrics = lambda table: {tuple(r[k] for k in ('train.learning_rate', 'train.max_leaf_nodes')): r['roc_auc'] for r in table}
    same = len({json.dumps(sorted(metrics(t).items())) for runs in res.values() for _, _, t in runs}) == 1
    lw, dw = (sum(w for w, _, _ in res[e]) for e in ('local', 'dask'))
    lc, dc = (sum(sw['children_s'] for _, sw, _ in res[e]) for e in ('local', 'dask'))
    speedup = lc / dc
    print(f'children: speed-up {speedup:.2f}x on {args.workers} workers, efficiency {speedup / args.workers:.2f} (goal >= 0.8)'
          + (f' (totals of {args.repeat} sweeps each)' if args.repeat > 1 else ''))
    print(f'whole sweep (shared and best stages, cluster start included): speed-up {lw / dw:.2f}x, efficiency {lw / dw / args.workers:.2f}')
    print(f'same ranking and metrics from both executors: {same}')
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
