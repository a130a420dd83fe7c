"""A 16-combination sweep, one after another and on a Dask LocalCluster of N workers, measured in one run on this machine.

Both sweeps run the same grid (train.learning_rate x train.max_leaf_nodes, 4 x 4 by default) on the same project and
data: the shared stages (ingest, validate, features) once, 16 child runs (train, evaluate), then audit and register
for the best. The children are the part that runs in parallel; their wall time gives the speed-up and the scaling
efficiency (speed-up / N). The whole sweep's wall time (shared and best stages included, and the cluster's start)
is printed beside it. Checks that every executor ranks the same combinations with the same metrics.

Two baselines, because the one-after-another sweep is not single-threaded: scikit-learn's boosted trees fit with
OpenMP on every core, and the next stage's kernel starts while a stage runs. Dask's workers run their children with
one thread each (the nanny sets OMP_NUM_THREADS=1), so that N children share N cores without oversubscribing them.
- against the local executor (`--executor local`, what a user runs without Dask): the speed-up a user sees;
- against a LocalCluster of one worker (the same single-threaded children, one at a time): the scaling efficiency in
  its usual sense, T(1 worker) / (N x T(N workers)), which says whether the design scales as workers grow.

Usage: python benchmarks/sweep.py [--max-rows N] [--workers N] [--no-one-worker] [--repeat K] [--learning-rates 0.03,0.1,0.2,0.3] [--leaves 7,15,31,63]
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_overhead import cpu_busy, project  # noqa: E402


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
        f'machine: {platform.platform()}, {os.cpu_count()} cores ({cpu}), {int(mem) // 1024**2 if mem != "?" else "?"} GiB, '
        f'load average {" ".join(f"{x:.2f}" for x in os.getloadavg())} at start'
    )
    print(
        'versions: python '
        + platform.python_version()
        + ', '
        + ', '.join(
            f'{p} {version(p)}'
            for p in ('mlops-nb', 'dask', 'distributed', 'papermill', 'ipykernel', 'mlflow', 'scikit-learn')
        )
    )


def _spin(_=None):
    t, x = time.perf_counter(), 0
    for i in range(20_000_000):
        x += i * i
    return time.perf_counter() - t


def parallel_capacity(n: int):
    "How many times as much pure CPU work n processes at once get done as one alone (n: perfect)"
    import multiprocessing as mp

    with mp.get_context('spawn').Pool(n) as pool:
        pool.map(_spin, range(n))  # the processes' start is not timed
        one = pool.apply(_spin)
        both = pool.map(_spin, range(n))
    return n * one / max(both)


def sweep(proj: Path, axes, executor: str, workers: int | None):
    from mlops_nb.core.project import load_project
    from mlops_nb.core.manifest import read_manifest
    from mlops_nb.pipeline.sweep import run_sweep

    # a warm process of this sweep's own, none at the start: no configuration finds one warmed by the one before
    with tempfile.TemporaryDirectory(prefix='mnbw-') as warm:
        os.environ['MLOPS_NB_WARM_DIR'] = warm
        t0 = time.perf_counter()
        run_dir = run_sweep(
            load_project(proj / 'settings.ini'),
            axes,
            executor=executor,
            workers=workers,
            echo=lambda *_: None,
            progress=False,
        )
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
    ap.add_argument(
        '--no-one-worker', action='store_true', help='skip the one-worker baseline (the scaling efficiency)'
    )
    ap.add_argument(
        '--repeat',
        type=int,
        default=1,
        help='sweeps per configuration, in alternating order (2: local, dask N, '
        'dask 1, dask 1, dask N, local), so that load from other processes that rises or falls during the run '
        'weighs on all alike (default 1)',
    )
    args = ap.parse_args()
    machine()
    from mlops_nb.pipeline.sweep_grid import parse_axis

    axes = [parse_axis(f'train.learning_rate={args.learning_rates}'), parse_axis(f'train.max_leaf_nodes={args.leaves}')]
    n = len(axes[0][1]) * len(axes[1][1])
    print(f'grid: {n} combinations (train.learning_rate x train.max_leaf_nodes), max_rows {args.max_rows or "all"}')
    capacity = [parallel_capacity(args.workers)]
    print(
        f'machine: {args.workers} CPU-bound processes at once do {capacity[0]:.2f}x the work of one (ideal {args.workers})',
        flush=True,
    )
    order = [('local', None), ('dask', args.workers)] + ([] if args.no_one_worker else [('dask', 1)])
    res = {o: [] for o in order}
    with tempfile.TemporaryDirectory() as tmp:
        proj = project(Path(tmp), args.max_rows)
        for executor, workers in [o for r in range(args.repeat) for o in (order if r % 2 == 0 else order[::-1])]:
            load, c0 = os.getloadavg()[0], cpu_busy()
            wall, sw, table = sweep(proj, axes, executor, workers)
            c1 = cpu_busy()
            cpu = f'   cpu {(c1[0] - c0[0]) / wall:.2f} cores busy, iowait {c1[1] - c0[1]:.1f} s' if c0 and c1 else ''
            res[executor, workers].append((wall, sw, table))
            per = [c['duration_s'] for c in sw['children'] if c.get('duration_s')]
            size = '' if workers is None else f' ({workers} worker{"s" if workers > 1 else ""})'
            print(
                f'{executor:<6}{size:<12} sweep {wall:7.1f} s   '
                f'children {sw["children_s"]:7.1f} s   per child {sum(per) / len(per):5.1f} s   best {sw["best"]["run_id"][-3:]} '
                f'{sw["best"]["combination"]} roc_auc {sw["best"]["roc_auc"]:.4f}   load {load:.2f} -> {os.getloadavg()[0]:.2f}{cpu}',
                flush=True,
            )
    metrics = lambda table: {
        tuple(r[k] for k in ('train.learning_rate', 'train.max_leaf_nodes')): r['roc_auc'] for r in table
    }
    same = len({json.dumps(sorted(metrics(t).items())) for runs in res.values() for _, _, t in runs}) == 1
    wall = {o: sum(w for w, _, _ in runs) for o, runs in res.items()}
    children = {o: sum(sw['children_s'] for _, sw, _ in runs) for o, runs in res.items()}
    many = ('dask', args.workers)
    totals = f' (totals of {args.repeat} sweeps each)' if args.repeat > 1 else ''
    for label, base in [
        ('against the local executor (one after another, boosted trees on every core)', ('local', None)),
        ('against one Dask worker (scaling efficiency)', ('dask', 1)),
    ]:
        if base not in res:
            continue
        c, w = children[base] / children[many], wall[base] / wall[many]
        print(
            f'{label}{totals}:\n  children: speed-up {c:.2f}x on {args.workers} workers, efficiency {c / args.workers:.2f} (goal >= 0.8); '
            f'whole sweep (shared and best stages, cluster start included): {w:.2f}x, efficiency {w / args.workers:.2f}'
        )
    capacity.append(parallel_capacity(args.workers))
    print(
        f'machine after the sweeps: {args.workers} CPU-bound processes at once do {capacity[1]:.2f}x the work of one; '
        f'a shared host that does not give {args.workers} processes {args.workers}x bounds the efficiency above by about '
        f'{min(capacity) / args.workers:.2f}-{max(capacity) / args.workers:.2f}'
    )
    print(f'same ranking and metrics from every configuration: {same}')
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
