"""The inner loop: what a data scientist waits for between one change and its result, against the floor.

In one fresh project on the default data, one after the other:
  (a) a cold full run                           `mlops-nb run`, nothing to reuse, no warm process yet
  (b) a run after one changed parameter         `mlops-nb run -p train.learning_rate=0.05`
  (c) an unchanged re-run                       `mlops-nb run -p train.learning_rate=0.05` again
  (d) the floor                                 the code cells of run (a)'s executed stage notebooks, in order,
                                                in one plain Python process (no kernels, no papermill, no runner)
and, beside the goals, (e) a cold full run in a second new project, the warm process up (a user's next project),
and (f) `-p train.learning_rate=0.05` in that second project: (b)'s change, the warm process warm (a day's next).
The benchmark has a warm process of its own (`MLOPS_NB_WARM_DIR` in a temporary folder): (a) starts without one.
A new project's MLflow store is a copy of a template in the user's cache (`mlops_nb.registry.tracking.store_template`),
made by the first store ever made with this MLflow: the benchmark says whether it was there, and `--fresh-cache`
starts (a) with an empty one (matplotlib's font cache left where it is), so that (a) is the first run on the machine.
Each is the wall time a user sees (a new `mlops-nb` process; for (d) a new `python` process), with its
ratio to (d) and, on Linux, the CPU seconds every core spent meanwhile (the warm process and kernels included). Goals on a 2-core machine: (a) <= 15 s, (b) <= 10 s with ingest, validate and features
reused, (c) <= 3 s, (a)/(d) <= 1.5.

Usage: python benchmarks/inner_loop.py [--max-rows N] [--fresh-cache]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_overhead import cpu_busy, machine, project  # noqa: E402

MLOPS_NB = Path(sys.executable).parent / 'mlops-nb'


def timed_run(proj: Path, *args):
    "`(wall seconds, CPU seconds of every core or None, manifest)` of one `mlops-nb run` in a new process"
    c0 = cpu_busy()
    t0 = time.perf_counter()
    res = subprocess.run(
        [str(MLOPS_NB), '--settings', str(proj / 'settings.ini'), 'run', *args],
        cwd=proj,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    cpu = (c1[0] - c0[0]) if c0 and (c1 := cpu_busy()) else None
    if res.returncode:
        sys.exit(f'mlops-nb run {" ".join(args)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}')
    manifest = json.loads(max((proj / 'runs').glob('*/manifest.json')).read_text())
    return wall, cpu, manifest


def floor_script(proj: Path, manifest: dict):
    "A script of the code cells of `manifest`'s executed notebooks, writing into a run folder of its own"
    src, dst = proj / 'runs' / manifest['run_id'], proj / 'runs' / 'floor'
    dst.mkdir()
    for f in ('manifest.json', 'params.yaml'):
        shutil.copy(src / f, dst / f)
    parts = ['import time, json', 'from IPython.display import display', 'times = {}']
    for r in manifest['stages']:
        nb = nbformat.read(src / r['notebook'], as_version=4)
        code = '\n'.join(c.source for c in nb.cells if c.cell_type == 'code')
        code = code.replace(str(src), str(dst))
        code = re.sub(
            r'^mlflow_run_id = .*$', "mlflow_run_id = ''", code, flags=re.M
        )  # register starts its own MLflow run
        parts += ['_t0 = time.perf_counter()', code, f'times[{r["name"]!r}] = time.perf_counter() - _t0']
    parts.append("print('TIMES ' + json.dumps(times))")
    path = proj / 'floor.py'
    path.write_text('\n'.join(parts) + '\n')
    return path, dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--max-rows', type=int, default=0, help='ingest sample size; 0 is the default pipeline on all rows')
    ap.add_argument(
        '--fresh-cache',
        action='store_true',
        help='start with an empty user cache: no MLflow store template (a first run)',
    )
    args = ap.parse_args()
    machine()
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory(prefix='mnbw-') as warm:
        os.environ['MLOPS_NB_WARM_DIR'] = warm  # removed at the end: the warm process then leaves
        if args.fresh_cache:
            import matplotlib

            os.environ.setdefault('MPLCONFIGDIR', matplotlib.get_cachedir())  # its font cache is not ours to time
            os.environ['XDG_CACHE_HOME'] = str(Path(d) / 'cache')
        cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'mlops-nb'
        template = 'there' if any(cache.glob('mlflow-schema-*.db')) else 'not there: (a) makes it'
        print(f'MLflow store template in {cache} at the start: {template}')
        proj = project(Path(d) / 'one', args.max_rows)
        a, a_cpu, ma = timed_run(proj)
        b, b_cpu, mb = timed_run(proj, '-p', 'train.learning_rate=0.05')
        c, c_cpu, mc = timed_run(proj, '-p', 'train.learning_rate=0.05')
        two = project(Path(d) / 'two', args.max_rows)
        e, e_cpu, me = timed_run(two)
        f, f_cpu, mf = timed_run(two, '-p', 'train.learning_rate=0.05')
        script, _ = floor_script(proj, ma)
        c0 = cpu_busy()
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, str(script)],
            cwd=proj / 'runs' / 'floor',
            capture_output=True,
            text=True,
            env={**os.environ, 'MPLBACKEND': 'Agg'},
        )
        floor = time.perf_counter() - t0
        floor_cpu = (c1[0] - c0[0]) if c0 and (c1 := cpu_busy()) else None
        if res.returncode:
            sys.exit(f'the floor script failed:\n{res.stderr[-3000:]}')
        stage_floor = json.loads(next(l for l in res.stdout.splitlines() if l.startswith('TIMES '))[6:])
    reused = lambda m: [r['name'] for r in m['stages'] if r.get('cached_from')]
    print(f'\ndefault pipeline ({len(ma["stages"])} stages), {ma["summary"].get("rows", 0):,} rows')
    print(f'{"":<48}{"wall s":>8}{"x (d)":>8}{"cpu s":>8}  reused')
    for label, wall, cpu, m in (
        ('(a) cold full run', a, a_cpu, ma),
        ('(b) after -p train.learning_rate=0.05', b, b_cpu, mb),
        ('(c) unchanged re-run', c, c_cpu, mc),
        ('(d) floor: the cells in one Python process', floor, floor_cpu, None),
        ('(e) cold full run, new project, warm process up', e, e_cpu, me),
        ('(f) -p train.learning_rate=0.05 in (e), warm', f, f_cpu, mf),
    ):
        cpu = f'{cpu:>8.1f}' if cpu is not None else f'{"":>8}'
        print(f'{label:<48}{wall:>8.1f}{wall / floor:>8.2f}{cpu}  {", ".join(reused(m)) if m else ""}')
    print('\nper stage: cells in (a) and in the floor, wall in (a)')
    for r in ma['stages']:
        print(
            f'  {r["name"]:<10} cells {r.get("cells_s", 0):6.2f} s   floor {stage_floor.get(r["name"], 0):6.2f} s   wall {r["duration_s"]:6.2f} s'
        )
    goals = [
        ('(a) <= 15 s', a <= 15),
        ('(b) <= 10 s', b <= 10),
        ('(b) reuses ingest, validate, features', reused(mb)[:3] == ['ingest', 'validate', 'features']),
        ('(c) <= 3 s', c <= 3),
        ('(a)/(d) <= 1.5', a / floor <= 1.5),
    ]
    print('\ngoals: ' + ', '.join(f'{g} {"met" if ok else "NOT met"}' for g, ok in goals))
    print(
        json.dumps(
            {
                'store_template_at_start': template == 'there',
                'cold_s': round(a, 2),
                'one_param_s': round(b, 2),
                'unchanged_s': round(c, 2),
                'floor_s': round(floor, 2),
                'cold_warm_process_s': round(e, 2),
                'one_param_warm_s': round(f, 2),
                'cpu_s': {
                    k: v and round(v, 1)
                    for k, v in zip('abcdef', (a_cpu, b_cpu, c_cpu, floor_cpu, e_cpu, f_cpu), strict=True)
                },
            }
        )
    )


if __name__ == '__main__':
    main()
