"""Per-stage overhead of `mlops-nb run` against papermill, measured in one run on this machine.

Overhead of a stage = its wall time minus the time its cells ran (papermill's per-cell durations).
Three ways of running notebooks are compared:
  mlops-nb      the default pipeline through the runner (kernel started ahead, in-process papermill)
  papermill.py  the same six stage notebooks, same parameters, `papermill.execute_notebook` in one process
  papermill CLI `papermill in.ipynb out.ipynb` on a one-cell notebook, a new process each time

Usage: python benchmarks/pipeline_overhead.py [--max-rows N] [--repeat K]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


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
    print(
        'versions: python '
        + platform.python_version()
        + ', '
        + ', '.join(
            f'{p} {version(p)}' for p in ('mlops-nb', 'papermill', 'nbclient', 'ipykernel', 'jupyter-client', 'mlflow')
        )
    )


def cpu_busy():
    "Busy and I/O-wait seconds of all cores so far (Linux), or None"
    try:
        v = [int(x) for x in open('/proc/stat').readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf('SC_CLK_TCK')
    return (sum(v) - v[3] - v[4]) / hz, v[4] / hz


def project(tmp: Path, max_rows: int):
    shutil.copytree(ROOT / 'notebooks' / 'stages', tmp / 'notebooks' / 'stages')
    (tmp / 'settings.ini').write_text(
        (ROOT / 'settings.ini').read_text().replace('max_rows = 0', f'max_rows = {max_rows}')
    )
    return tmp


def cells_seconds(nb):
    return sum((c.metadata.get('papermill', {}).get('duration') or 0) for c in nb.cells)


def mlops_nb_overheads(proj: Path):
    from mlops_nb.core.project import load_project
    from mlops_nb.core.manifest import read_manifest
    from mlops_nb.pipeline.runner import run_pipeline

    run_dir = run_pipeline(load_project(proj / 'settings.ini'), echo=lambda *_: None)
    m = read_manifest(run_dir)
    return [r['overhead_s'] for r in m['stages']], m


def papermill_overheads(proj: Path, manifest: dict):
    "The same notebooks and parameters, one `papermill.execute_notebook` call each"
    import papermill as pm

    run_dir = proj / 'runs' / 'papermill'
    run_dir.mkdir(parents=True)
    res = []
    for r in manifest['stages']:
        params = {**r['parameters'], 'run_dir': str(run_dir)}
        params.pop('mlflow_run_id', None)
        t0 = time.perf_counter()
        nb = pm.execute_notebook(
            str(proj / 'notebooks' / 'stages' / r['notebook']),
            str(run_dir / r['notebook']),
            parameters=params,
            cwd=str(run_dir),
            progress_bar=False,
            kernel_name='python3',
        )
        res.append(time.perf_counter() - t0 - cells_seconds(nb))
    return res


def one_cell(tmp: Path, repeat: int):
    "Wall time of a one-cell notebook: papermill's CLI vs execute_notebook in one process"
    import papermill as pm

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell('x = 1')],
        metadata={'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}},
    )
    src = tmp / 'one_cell.ipynb'
    nbformat.write(nb, src)
    exe = Path(sys.executable).parent / 'papermill'
    cli, api = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(
            [str(exe), str(src), str(tmp / 'out_cli.ipynb'), '--no-progress-bar'], check=True, capture_output=True
        )
        cli.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pm.execute_notebook(str(src), str(tmp / 'out_api.ipynb'), progress_bar=False)
        api.append(time.perf_counter() - t0)
    return cli, api


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--max-rows', type=int, default=0, help='ingest sample size; 0 is the default pipeline on all rows')
    ap.add_argument('--repeat', type=int, default=3, help='repetitions of the pipeline and of the one-cell notebook')
    args = ap.parse_args()
    machine()
    ours, theirs, names = [], [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            proj = project(Path(d), args.max_rows)
            o, m = mlops_nb_overheads(proj)
            ours += o
            theirs += papermill_overheads(proj, m)
            names = [r['name'] for r in m['stages']]
            print(f'repeat {i + 1}: mlops-nb ' + ' '.join(f'{n}={v:.2f}' for n, v in zip(names, o)))
    with tempfile.TemporaryDirectory() as d:
        cli, api = one_cell(Path(d), args.repeat)
    med = statistics.median
    print()
    print(f'{"per-stage overhead (wall - cell time), median":<58}{"seconds":>8}{"x mlops-nb":>12}')
    rows = [
        ('mlops-nb run, default pipeline (6 stages)', med(ours)),
        ('papermill.execute_notebook, same notebooks and parameters', med(theirs)),
        ('papermill CLI, one-cell notebook (whole wall time)', med(cli)),
        ('papermill.execute_notebook, one-cell notebook (wall time)', med(api)),
    ]
    for label, v in rows:
        print(f'{label:<58}{v:>8.3f}{v / rows[0][1]:>12.1f}')
    print(
        f'\ngoal: mlops-nb median per-stage overhead <= 0.5 s: {"met" if med(ours) <= 0.5 else "NOT met"}'
        f' ({len(ours)} stage executions)'
    )
    print(
        json.dumps(
            {
                'mlops_nb_median_s': round(med(ours), 3),
                'papermill_api_median_s': round(med(theirs), 3),
                'papermill_cli_one_cell_s': round(med(cli), 3),
                'papermill_api_one_cell_s': round(med(api), 3),
            }
        )
    )


if __name__ == '__main__':
    main()
