"""Fault injection: processes killed mid-stage and resumed, the tracking store gone mid-run, a full disk, racing
approvals on SQLite, a model server killed under load, and damaged records (a truncated manifest, a garbage
prediction-log row). Each test checks what the product promises when the fault hits, not only that it survives.

One project (`base`) is shared by the module: its train and evaluate notebooks carry a *gate* cell that does
nothing unless a gate file exists, in which case it records that the stage got there and waits until the file is
removed. A test holds a stage at a known point by creating the gate file, and lets it go on by removing it; every
run of the project, gated or not, executes the same notebooks (same hashes, same cache keys).
"""

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import httpx
import nbformat
import pandas as pd
import psutil
import pytest

from conftest import MLOPS_NB, cli, make_project, manifests
from mlops_nb.registry.server import free_port

MODEL = 'acs-employment'
STAGES = ['ingest', 'validate', 'features', 'train', 'evaluate', 'audit', 'register']


# -- helpers ---------------------------------------------------------------------------------------------------


def _env():
    "The environment a user's shell gives `mlops-nb`: no MLFLOW_* of this test process"
    return {**{k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}, 'PYTHONWARNINGS': 'ignore'}


def _start(project: Path, log: Path, *args):
    "`mlops-nb ARGS` on `project` in the background, stdout and stderr to `log`"
    with open(log, 'w') as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*MLOPS_NB, '--settings', str(project / 'settings.ini'), *args],
            cwd=project,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _gate_cell(gate: Path):
    return (
        '# fault injection (tests/test_faults.py): while the gate file exists, say so and wait\n'
        'import os, pathlib, time\n'
        f'_gate = pathlib.Path({str(gate)!r})\n'
        'if _gate.exists():\n'
        "    pathlib.Path(str(_gate) + '.reached').write_text(str(os.getpid()))\n"
        '    while _gate.exists(): time.sleep(0.05)\n'
    )


def _insert_gate(project: Path, notebook: str, anchor: str, after: bool):
    "Insert the gate cell of the stage of `notebook` just after (or before) the code cell containing `anchor`"
    path = project / 'notebooks' / 'stages' / notebook
    nb = nbformat.read(path, as_version=4)
    i = next(i for i, c in enumerate(nb.cells) if c.cell_type == 'code' and anchor in c.source)
    stage = notebook.split('_', 1)[1].removesuffix('.ipynb')
    nb.cells.insert(i + 1 if after else i, nbformat.v4.new_code_cell(_gate_cell(project / 'gates' / stage)))
    nbformat.write(nb, path)


def _close(gate: Path):
    gate.unlink(missing_ok=True)


def _hold(project: Path, stage: str):
    "Create the gate of `stage`: its next execution stops at the gate cell; the path of its `.reached` marker"
    gate = project / 'gates' / stage
    gate.parent.mkdir(exist_ok=True)
    reached = Path(str(gate) + '.reached')
    reached.unlink(missing_ok=True)
    gate.write_text('hold')
    return reached


def _wait_for(path: Path, proc, log: Path, timeout=300):
    "Wait until `path` exists while `proc` runs; fail with the process's output if it ends first"
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(
                f'{proc.args[3:]} ended with {proc.returncode} before {path.name} was reached:\n'
                + log.read_text(errors='replace')[-4000:],
                pytrace=False,
            )
        if time.time() - t0 > timeout:
            _kill_tree(proc)
            pytest.fail(
                f'{path.name} not reached within {timeout} s:\n' + log.read_text(errors='replace')[-4000:],
                pytrace=False,
            )
        time.sleep(0.1)


def _kill_tree(proc):
    "SIGKILL `proc` and every descendant (its kernel server and kernels), as a machine crash or the OOM killer would"
    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return []
    tree = [root, *root.children(recursive=True)]
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(30)
    gone, alive = psutil.wait_procs(tree[1:], timeout=30)
    assert not alive, f'processes survived SIGKILL: {alive}'
    return tree


def _new_run(project: Path, before: set):
    "The manifest of the one run of `project` not among the run ids `before`"
    new = [m for m in manifests(project) if m['run_id'] not in before]
    assert len(new) == 1, [m['run_id'] for m in new]
    return new[0]


def _raw_manifest(project: Path, run_id: str):
    return json.loads((project / 'runs' / run_id / 'manifest.json').read_text())


def _stage(m: dict, name: str):
    return next(r for r in m['stages'] if r['name'] == name)


def _no_traceback(res, what):
    assert 'Traceback (most recent call last)' not in res.stderr + res.stdout, (
        f'{what}: a Python traceback instead of an error line (exit {res.returncode}):\n{res.stderr[-4000:]}'
    )


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    uri = f'sqlite:///{project / "mlflow.db"}'
    return MlflowClient(uri, registry_uri=uri)


def _champion(c):
    try:
        return str(c.get_model_version_by_alias(MODEL, 'champion').version)
    except Exception:
        return None


# -- the shared project ----------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    """A project whose train notebook has a gate after the model is fitted and written, and whose evaluate notebook
    has one before it evaluates (and reads the champion from MLflow); one uninterrupted run, approved: champion v1"""
    project = make_project(tmp_path_factory.mktemp('faults'))
    _insert_gate(project, '04_train.ipynb', 'result = train(', after=True)
    _insert_gate(project, '05_evaluate.ipynb', 'result = evaluate(', after=False)
    res = cli(project, 'run', '--approve-as', 'tester')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    m = manifests(project)[-1]
    assert m['status'] == 'completed' and _champion(_client(project)) == m['summary']['version'] == '1'
    return SimpleNamespace(project=project, run=m)


# -- 1. SIGKILL inside a stage, then --resume ------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_in_train_then_in_evaluate_then_resume_gives_the_uninterrupted_outputs(base):
    "Killed (CLI, kernel server, kernels) inside train after it wrote its model, resumed, killed inside evaluate, resumed"
    project, ref = base.project, base.run
    before = {m['run_id'] for m in manifests(project)}
    train_at, eval_at = _hold(project, 'train'), _hold(project, 'evaluate')
    try:
        log1 = project / 'crash1.log'
        proc = _start(project, log1, 'run', '--no-cache')  # every stage executes: nothing linked from the reference run
        _wait_for(train_at, proc, log1)
        _kill_tree(proc)
        run_id = _new_run(project, before)['run_id']
        run_dir = project / 'runs' / run_id
        assert any((run_dir / 'artifacts' / '04_train').iterdir()), 'killed after train wrote part of its outputs'
        assert _stage(_raw_manifest(project, run_id), 'train')['status'] == 'running'

        _close(project / 'gates' / 'train')
        log2 = project / 'crash2.log'
        proc = _start(project, log2, 'run', '--resume', run_id, '--no-cache')
        _wait_for(eval_at, proc, log2)
        _kill_tree(proc)
        m = _raw_manifest(project, run_id)
        assert [r['status'] for r in m['stages']][:5] == ['completed'] * 4 + ['running'], (
            f'the first resume completed train and was killed inside evaluate: {[r["status"] for r in m["stages"]]}'
        )
    finally:
        _close(project / 'gates' / 'train')
        _close(project / 'gates' / 'evaluate')

    res = cli(project, 'run', '--resume', run_id, '--no-cache')  # executed, whatever other runs left in the cache
    assert res.returncode == 0, (
        f'resume after two kills: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
    )
    _no_traceback(res, 'mlops-nb run --resume')
    m = _raw_manifest(project, run_id)
    assert m['status'] == 'completed' and [r['status'] for r in m['stages']] == ['completed'] * 7, m['status']
    assert not any(r.get('cached_from') for r in m['stages']), (
        'every stage executed in this run, none was linked from another'
    )

    # the outputs an uninterrupted run with the same settings made (the champion it met differs: v1 now, none then)
    for name in ('ingest', 'features', 'audit'):  # deterministic files, byte for byte
        got, want = _stage(m, name)['outputs'], _stage(ref, name)['outputs']
        assert got == want, f'{name} outputs differ from the uninterrupted run: ' + str(
            {k: (got.get(k), want.get(k)) for k in {*got, *want} if got.get(k) != want.get(k)}
        )
    assert _stage(m, 'ingest')['result']['data_version'] == _stage(ref, 'ingest')['result']['data_version']
    assert m['summary']['data_version'] == ref['summary']['data_version']
    for name, volatile in (('train', {'fit_seconds'}), ('evaluate', set()), ('audit', set())):
        got = {k: v for k, v in _stage(m, name)['result'].items() if k not in volatile}
        want = {k: v for k, v in _stage(ref, name)['result'].items() if k not in volatile}
        assert got == want, f'{name} result differs from the uninterrupted run: ' + str(
            {k: (got.get(k), want.get(k)) for k in {*got, *want} if got.get(k) != want.get(k)}
        )
    assert m['summary']['metrics'] == ref['summary']['metrics']
    for name in STAGES:  # the same files, and no leftover of the killed executions among them
        assert set(_stage(m, name)['outputs']) == set(_stage(ref, name)['outputs']), (
            name,
            _stage(m, name)['outputs'].keys(),
        )
    leftovers = [
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob('*')
        if p.name.endswith(('.tmp', '.running.ipynb', '.old')) or p.name.startswith('.')
    ]
    assert leftovers == [], f'files of the killed executions left in the completed run folder: {leftovers}'
    for rel, digest in (o for r in m['stages'] for o in r['outputs'].items()):  # the record is the folder
        from mlops_nb.core.basics import sha256_path

        assert sha256_path(run_dir / rel) == digest, f'{rel} is not what the manifest records'
    versions = [
        v for v in _client(project).search_model_versions(f"name='{MODEL}'") if v.tags.get('mlops_nb.run_id') == run_id
    ]
    assert len(versions) == 1, f'the run registered its model {len(versions)} times'
    assert _stage(m, 'register')['result']['decision'] == 'pending_approval'


# -- 2. the tracking store goes away mid-run -------------------------------------------------------------------


def test_tracking_store_gone_after_train_fails_the_run_cleanly_and_leaves_the_champion(base):
    "After train completed, the SQLite store's file turns to garbage (every MLflow call fails); restored afterwards"
    project = base.project
    db = project / 'mlflow.db'
    c = _client(project)
    champion = _champion(c)
    assert champion is not None, 'a champion exists before'
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{MODEL}'"))
    before = {m['run_id'] for m in manifests(project)}
    reached = _hold(project, 'evaluate')
    saved = None
    log = project / 'store-gone.log'
    try:
        # the store named by an absolute URI: other shared settings than the earlier runs', so every stage executes
        # (evaluate too, whatever earlier tests left in the cache) and the gate in evaluate is met
        proc = _start(project, log, 'run', '-p', f'mlflow.tracking_uri=sqlite:///{db}')
        _wait_for(reached, proc, log)
        assert _stage(_new_run(project, before), 'train')['status'] == 'completed'
        saved = db.read_bytes()
        with open(db, 'r+b') as f:  # in place: the connections MLflow holds open see it too
            f.write(b'\xde\xad\xbe\xef' * 4096)
        _close(project / 'gates' / 'evaluate')
        try:
            proc.wait(300)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            pytest.fail(
                'the run did not end within 300 s of its tracking store going away:\n' + log.read_text()[-4000:],
                pytrace=False,
            )
    finally:
        _close(project / 'gates' / 'evaluate')
        if saved is not None:
            db.write_bytes(saved)
    out = log.read_text(errors='replace')
    run_id = _new_run(project, before)['run_id']
    m = _raw_manifest(project, run_id)
    problems = []  # every one of them, for whoever fixes them
    if proc.returncode in (0, None):
        problems.append(f'exit code {proc.returncode}')
    if 'Traceback (most recent call last)' in out:
        tb = out[out.index('Traceback (most recent call last)') :]
        problems.append(
            f'a Python traceback instead of an error line (exit {proc.returncode}); its end:\n'
            + '\n'.join(tb.splitlines()[-12:])
        )
    if not re.search(r'(?m)^error: .*(tracking|MLflow|mlflow\.db|not a database)', out):
        problems.append('no line `error: ...` naming the tracking store on stderr')
    if m['status'] != 'failed':
        problems.append(
            f"manifest.json says status {m['status']!r}, not 'failed' (stages: "
            + ', '.join(f'{r["name"]} {r["status"]}' for r in m['stages'])
            + ')'
        )
    failed = [r for r in m['stages'] if r['status'] not in ('completed', 'pending')]
    if [r['status'] for r in failed] != ['failed'] or not failed[0].get('error'):
        problems.append(
            f'the stage that met the failure is not recorded as failed with its error: {[(r["name"], r["status"], r.get("error")) for r in failed]}'
        )
    res = cli(project, 'runs')
    row = next((l for l in res.stdout.splitlines() if l.startswith(run_id)), '')
    if res.returncode != 0 or row.split()[3:4] != ['failed']:
        problems.append(f'`mlops-nb runs` shows the run as {row.split()[3:4]} (exit {res.returncode})')

    c = _client(project)  # the restored store
    if _champion(c) != champion:
        problems.append(f'the champion moved: {champion} -> {_champion(c)}')
    now = sorted(int(v.version) for v in c.search_model_versions(f"name='{MODEL}'"))
    if now != versions:
        problems.append(f'model versions changed: {versions} -> {now}')
    names = [rm.name for rm in c.search_registered_models()]
    if names != [MODEL]:
        problems.append(f'a lock or another model was left behind: {names}')
    res = cli(project, 'models')
    if res.returncode != 0 or not re.search(rf'(?m)^{champion}\s+champion', res.stdout):
        problems.append(
            f'`mlops-nb models` on the restored store (exit {res.returncode}): {res.stdout[-1000:]} {res.stderr[-1000:]}'
        )
    assert not problems, f'after the tracking store went away mid-run ({run_id}):\n- ' + '\n- '.join(problems)


# -- 3. a full disk --------------------------------------------------------------------------------------------

SPILL_ROWS = 1_000_000  # two columns of random floats: about 38 MB of CSV


def _spill_notebook(project: Path, patch: bool):
    "A stage of the project's own, `spill`, that writes a small JSON then a CSV larger than the disk has room for"
    cells = [
        nbformat.v4.new_markdown_cell('# Spill\nWrites a large table: on a full disk, the write fails.'),
        nbformat.v4.new_code_cell(
            "run_dir: str = '../../runs/interactive'  # run folder the stage reads from and writes to\n"
            f'rows: int = {SPILL_ROWS}  # rows of the table to write, in [1, inf)',
            metadata={'tags': ['parameters']},
        ),
    ]
    if patch:  # no file system of limited size here: the disk fills after 1 MiB of any file opened for writing in the run folder
        cells.append(
            nbformat.v4.new_code_cell(
                'import builtins, errno, io, os\n'
                '_open, _room = builtins.open, [1 << 20]\n'
                'class _Full:\n'
                '    def __init__(self, f): self._f = f\n'
                '    def write(self, s):\n'
                '        n = min(len(s), _room[0])\n'
                '        self._f.write(s[:n]); self._f.flush(); _room[0] -= n\n'
                '        if n < len(s): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n'
                '        return n\n'
                '    def __getattr__(self, k): return getattr(self._f, k)\n'
                '    def __iter__(self): return iter(self._f)\n'
                '    def __enter__(self): return self\n'
                '    def __exit__(self, *exc): self._f.close()\n'
                'def _full_open(file, mode="r", *a, **kw):\n'
                '    f = _open(file, mode, *a, **kw)\n'
                '    inside = isinstance(file, (str, os.PathLike)) and os.path.abspath(file).startswith(os.path.abspath(run_dir))\n'
                '    return _Full(f) if inside and any(m in mode for m in "wax") else f\n'
                'builtins.open = io.open = _full_open'
            )
        )
    cells.append(
        nbformat.v4.new_code_cell(
            'import numpy as np\n'
            'import pandas as pd\n'
            'from mlops_nb.core.project import stage_context\n\n'
            "ctx = stage_context(run_dir, 'spill')\n"
            "ctx.write('started.json', {'rows': rows})\n"
            "table = pd.DataFrame(np.random.default_rng(0).random((rows, 2)), columns=['a', 'b'])\n"
            "ctx.write('table.csv', table)"
        )
    )
    nb = nbformat.v4.new_notebook(
        cells=cells, metadata={'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}
    )
    nbformat.write(nb, project / 'notebooks' / 'stages' / '10_spill.ipynb')


def _tmpfs_works(where: Path):
    "Whether this process can mount a 1 MiB tmpfs in a mount namespace of its own (root, or a user namespace)"
    if os.environ.get('MLOPS_NB_TEST_ENOSPC') == 'patch' or not shutil.which('unshare'):
        return None
    where.mkdir(parents=True, exist_ok=True)
    argv = ['unshare', '-m'] if os.geteuid() == 0 else ['unshare', '-r', '-m']
    probe = subprocess.run(
        [*argv, 'sh', '-c', f'mount -t tmpfs -o size=1m tmpfs "{where}" && df -k "{where}"'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return argv if probe.returncode == 0 else None


def test_full_disk_in_a_stage_leaves_no_partial_file_and_says_no_space(base):
    """ENOSPC in the middle of a stage's write. Where this process can mount a tmpfs in a mount namespace of its own,
    the runs folder of the run is a 16 MiB tmpfs and the stage writes 38 MB: a real full disk. Elsewhere, the stage's
    kernel makes every file it opens for writing in the run folder fail with ENOSPC after 1 MiB."""
    project = base.project
    runs = project / 'runs_full'  # the mount point (empty outside the namespace)
    kept = project / 'runs_enospc'  # what the run left, copied out of the tmpfs before it goes
    unshare = _tmpfs_works(runs)
    _spill_notebook(project, patch=unshare is None)
    args = lambda folder: ['run', '-p', f'project.runs_dir={folder}', '-p', 'pipeline.stages=ingest,spill']
    if unshare:
        cmd = shlex.join([*MLOPS_NB, '--settings', str(project / 'settings.ini'), *args(runs)])
        script = (
            f'mount -t tmpfs -o size=16m tmpfs "{runs}" || exit 99\n{cmd}\nrc=$?\n'
            f'mkdir -p "{kept}" && cp -a "{runs}/." "{kept}/"\nexit $rc\n'
        )
        p = subprocess.run(
            [*unshare, 'bash', '-c', script], cwd=project, env=_env(), capture_output=True, text=True, timeout=600
        )
        res = subprocess.CompletedProcess(p.args, p.returncode, p.stdout, p.stderr)
        assert res.returncode != 99, f'the tmpfs could not be mounted: {res.stderr}'
    else:
        res = cli(project, *args(kept))
    run_dirs = [d for d in kept.glob('2*') if d.is_dir()]
    assert len(run_dirs) == 1, (res.stdout[-2000:], res.stderr[-3000:])
    run_dir = run_dirs[0]
    m = json.loads((run_dir / 'manifest.json').read_text())
    spill = _stage(m, 'spill')
    assert res.returncode != 0, f'a run whose stage hit a full disk exited 0:\n{res.stdout[-2000:]}'
    _no_traceback(res, 'mlops-nb run on a full disk')
    assert 'No space left on device' in res.stderr and 'stage spill failed' in res.stderr, res.stderr[-3000:]
    assert m['status'] == 'failed' and spill['status'] == 'failed', (m['status'], spill['status'])
    assert 'No space left on device' in (spill.get('error') or ''), spill.get('error')
    assert _stage(m, 'ingest')['status'] == 'completed'
    folder = run_dir / 'artifacts' / '10_spill'
    assert (folder / 'started.json').is_file(), 'what the stage wrote before the disk filled is there'
    partial = [
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob('*')
        if 'table.csv' in p.name or p.name.endswith(('.tmp', '.running.ipynb'))
    ]
    assert partial == [], f'partial or temporary files left in the run folder: {partial}'
    assert (run_dir / '10_spill.ipynb').is_file(), 'the executed notebook up to the failing cell is kept'


# -- 4. two approvals at the same moment, on SQLite ------------------------------------------------------------


@pytest.mark.slow
def test_two_approvals_at_once_on_sqlite_one_wins(base):
    project = base.project
    c = _client(project)
    champion = _champion(c)
    runs = []
    for _ in range(2):  # two models (trained twice: nothing reused), both evaluated against the current champion
        before = {m['run_id'] for m in manifests(project)}
        res = cli(project, 'run', '--no-cache')
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        runs.append(_new_run(project, before))
    for m in runs:
        reg = _stage(m, 'register')['result']
        assert reg['decision'] == 'pending_approval' and reg['compared_with'] == champion, reg
    from mlops_nb.registry.gate import history

    events = [e['event'] for e in history(c, MODEL)]

    with ThreadPoolExecutor(2) as ex:
        results = list(
            ex.map(lambda m: cli(project, 'approve', m['run_id'], '--by', f'approver-{m["run_id"][-6:]}'), runs)
        )
    codes = [r.returncode for r in results]
    assert sorted(codes) == [0, 1], [f'exit {r.returncode}: {r.stdout[-500:]} {r.stderr[-2000:]}' for r in results]
    for r in results:
        _no_traceback(r, 'mlops-nb approve')
    win, lose = (0, 1) if codes[0] == 0 else (1, 0)
    refused = results[lose].stderr
    assert refused.startswith('error: ') and 'changed since this decision was made' in refused, refused

    c = _client(project)
    winner, loser = runs[win]['summary']['version'], runs[lose]['summary']['version']
    assert _champion(c) == winner
    assert str(c.get_model_version_by_alias(MODEL, 'previous-champion').version) == champion
    assert 'mlops_nb.approval' not in c.get_model_version(MODEL, loser).tags, 'the refused approval left a tag'
    assert [e['event'] for e in history(c, MODEL)] == events + ['approved'], 'exactly one move recorded'
    assert not _raw_manifest(project, runs[lose]['run_id']).get('decisions'), 'the refused run records no decision'
    assert [d['by'] for d in _raw_manifest(project, runs[win]['run_id'])['decisions']] == [
        f'approver-{runs[win]["run_id"][-6:]}'
    ]
    assert [rm.name for rm in c.search_registered_models()] == [MODEL]


# -- 5. the model server killed under load ---------------------------------------------------------------------


def _wait_ready(url, proc, log, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f'the server exited with {proc.returncode}:\n' + log.read_text()[-3000:]
        try:
            if httpx.get(url + '/ping', timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f'{url} did not answer within {timeout} s:\n' + log.read_text()[-3000:])


def _rows(base):
    from mlops_nb.stages.features import model_input

    run = base.project / 'runs' / base.run['run_id']
    features = json.loads((run / 'artifacts/03_features/features.json').read_text())
    hold = model_input(pd.read_parquet(run / 'artifacts/03_features/holdout.parquet'), features)
    return list(hold.columns), hold.astype(object).where(hold.notna(), None).values.tolist()


KILL_MARGIN_S = (
    3.0  # the log is written in batches every 0.2 s: what was answered this long before a SIGKILL is on disk
)


@pytest.fixture(scope='module')
def killed_server(base):
    "`mlops-nb serve` under load from 6 clients for 6 s, then SIGKILL: what the clients saw"
    project = base.project
    columns, rows = _rows(base)
    port = free_port()
    url = f'http://127.0.0.1:{port}'
    log = project / 'serve1.log'
    proc = _start(project, log, 'serve', '--port', str(port))
    answered, failed, stop, lock = [], [], threading.Event(), threading.Lock()

    def client(i):
        with httpx.Client(timeout=30) as h:
            k = 0
            while not stop.is_set():
                batch = rows[(i * 37 + k) % 300 : (i * 37 + k) % 300 + 1 + k % 3]
                k += 1
                try:
                    r = h.post(url + '/invocations', json={'dataframe_split': {'columns': columns, 'data': batch}})
                except httpx.HTTPError:
                    return  # the server is gone
                with lock:
                    if r.status_code == 200:
                        answered.append(
                            (time.monotonic(), r.headers['x-request-id'], len(batch), r.json()['predictions'])
                        )
                    else:
                        failed.append((r.status_code, r.text[:200]))

    try:
        _wait_ready(url, proc, log)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(6)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        stop.set()
        for t in threads:
            t.join(60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    return SimpleNamespace(
        project=project,
        columns=columns,
        rows=rows,
        answered=answered,
        failed=failed,
        killed_at=killed_at,
        db=project / 'predictions.db',
        returncode=proc.returncode,
    )


def test_sigkill_under_load_then_restart_keeps_a_whole_readable_log(killed_server):
    s = killed_server
    assert s.returncode == -signal.SIGKILL
    assert s.failed == [] and len(s.answered) > 200, (len(s.answered), s.failed[:3])
    early = [a for a in s.answered if a[0] < s.killed_at - KILL_MARGIN_S]
    assert len(early) > 100, 'there was load well before the kill'

    # the file: intact, every row whole (its JSON parses and has as many values as the request had rows)
    with sqlite3.connect(s.db) as con:
        assert con.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        raw = con.execute(
            'SELECT seq, request_id, status, rows, features, predictions, scores FROM predictions'
        ).fetchall()
    for seq, rid, status, n, feats, preds, scores in raw:
        assert status == 200, (seq, status)
        f, p, sc = json.loads(feats), json.loads(preds), json.loads(scores)
        assert len(p) == len(sc) == n and set(f) == set(s.columns) and all(len(v) == n for v in f.values()), (
            f'half-written row {seq} ({rid})'
        )
    from mlops_nb.serving.logreader import read_predictions

    url = f'sqlite:///{s.db}'
    log = read_predictions(url)
    by_rid = {rid: (n, preds) for _, rid, n, preds in s.answered}
    logged = set(log.request_id)
    assert logged <= set(by_rid), f'{len(logged - set(by_rid))} logged requests were never answered'
    for rid, g in log.groupby('request_id'):
        assert g.prediction.tolist() == by_rid[rid][1], f'{rid}: logged predictions are not the answer'
    lost = [rid for _, rid, _, _ in early if rid not in logged]
    assert not lost, (
        f'{len(lost)} of {len(early)} requests answered over {KILL_MARGIN_S} s before the SIGKILL are not in the log'
    )

    # restarted on the same log: it answers, writes without errors, and stops cleanly
    port = free_port()
    srv_url = f'http://127.0.0.1:{port}'
    proc = subprocess.Popen(
        [*MLOPS_NB, '--settings', str(s.project / 'settings.ini'), 'serve', '--port', str(port)],
        cwd=s.project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.time()
        while True:
            assert proc.poll() is None, (
                f'the restarted server exited with {proc.returncode}: {proc.stderr.read()[-3000:]}'
            )
            try:
                if httpx.get(srv_url + '/ping', timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() - t0 < 120, 'the restarted server did not answer within 120 s'
            time.sleep(0.2)
        new = []
        for i in range(5):
            r = httpx.post(
                srv_url + '/invocations',
                json={'dataframe_split': {'columns': s.columns, 'data': s.rows[i : i + 1]}},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            new.append(r.headers['x-request-id'])
        time.sleep(0.6)
        health = httpx.get(srv_url + '/health', timeout=10).json()
        assert health['prediction_log']['write_errors'] == 0, health
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and 'stopped: ' in stdout and 'NOT written' not in stdout, (
        stdout[-2000:] + stderr[-3000:]
    )
    after = read_predictions(url)
    assert set(new) <= set(after.request_id) and len(after) == len(log) + 5
    res = cli(s.project, 'predictions', 'export', '--to', str(s.project / 'export.parquet'))
    assert res.returncode == 0, res.stderr
    assert len(pd.read_parquet(s.project / 'export.parquet')) == len(after)


# -- 6. damaged records ----------------------------------------------------------------------------------------


def test_a_truncated_manifest_is_named_not_a_crash(base):
    "A run folder whose manifest.json was cut short: runs, show and report name it (error or warning), and go on with the rest"
    project = base.project
    good = base.run['run_id']
    bad_id = '20000101T000000Z_bad000'
    bad = project / 'runs' / bad_id
    shutil.copytree(project / 'runs' / good, bad)
    manifest = bad / 'manifest.json'
    named = lambda out: str(manifest) in out or f'{bad_id}/manifest.json' in out
    problems = []

    def check(args, must_fail=False):
        res = cli(project, *args)
        both, what = res.stdout + res.stderr, f'`mlops-nb {" ".join(args)}` (exit {res.returncode})'
        if 'Traceback (most recent call last)' in both:
            problems.append(f'{what}: a Python traceback; its end:\n' + '\n'.join(both.splitlines()[-6:]))
        elif not named(both):
            lines = res.stdout.splitlines()
            shown = (lines if len(lines) <= 5 else lines[:3] + ['...'] + lines[-2:]) + res.stderr.splitlines()[-3:]
            problems.append(f'{what} does not name {bad_id}/manifest.json; it printed:\n    ' + '\n    '.join(shown))
        if res.returncode not in ((1,) if must_fail else (0, 1)):
            problems.append(f'{what}: exit code {res.returncode}')
        return res

    try:
        manifest.chmod(0o644)
        text = manifest.read_text()
        manifest.write_text(text[: len(text) // 2])  # a write cut short

        res = check(['runs'])
        if res.returncode == 0 and good not in res.stdout:
            problems.append('`mlops-nb runs` no longer lists the other runs')
        check(['show', bad_id], must_fail=True)
        res = cli(project, 'show', good)
        if res.returncode != 0 or not res.stdout.startswith(f'run {good}'):
            problems.append(f'`mlops-nb show {good}` of a sound run fails')
        res = check(['report'])
        if res.returncode == 0 and good not in (project / 'runs' / 'index.html').read_text():
            problems.append('`mlops-nb report` left the sound runs out of the dashboard')
    finally:
        shutil.rmtree(bad, ignore_errors=True)
    assert not problems, 'with a truncated manifest.json in one run folder:\n- ' + '\n- '.join(problems)


def test_a_garbage_prediction_log_row_is_named_not_a_crash(killed_server):
    "A row of predictions.db whose features column is not JSON: export and monitor --from-log name it (error or warning)"
    project, db = killed_server.project, killed_server.db
    rid = 'garbage-row-0001'
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(' ')
    with sqlite3.connect(db) as con:
        n = con.execute('SELECT COUNT(*) FROM predictions WHERE status = 200').fetchone()[0]
        assert n > 0
        seq = con.execute(
            'INSERT INTO predictions (request_id, time, model_name, model_version, role, status, rows, features, '
            "predictions, scores, latency_ms) VALUES (?, ?, ?, '1', 'champion', 200, 1, ?, '[1]', '[0.9]', 1.0)",
            (rid, now, MODEL, '{"AGEP": [45.0], "SCHL": ["2'),
        ).lastrowid
    named = lambda out: (
        rid in out or re.search(rf'\b(seq|row)\s*{seq}\b', out) or str(db) in out or 'predictions.db' in out
    )
    problems = []

    def check(args):
        res = cli(project, *args)
        both, what = res.stdout + res.stderr, f'`mlops-nb {" ".join(args)}` (exit {res.returncode})'
        if 'Traceback (most recent call last)' in both:
            problems.append(f'{what}: a Python traceback; its end:\n' + '\n'.join(both.splitlines()[-8:]))
        elif not named(both):
            problems.append(
                f'{what} does not name the bad row ({rid}, seq {seq}) or the log:\n    '
                + '\n    '.join(res.stderr.splitlines()[-4:])
            )
        elif res.returncode != 0 and not re.search(r'(?m)^error: ', res.stderr):
            problems.append(f'{what}: no `error:` line')
        return res

    try:
        out = project / 'with-garbage.parquet'
        res = check(['predictions', 'export', '--to', str(out)])
        if res.returncode == 0:  # skipped with a warning: the other rows are there, the bad one is not
            df = pd.read_parquet(out)
            if rid in set(df.request_id) or not len(df) or 'warning' not in res.stderr.lower():
                problems.append(
                    f'`predictions export` exit 0: bad row exported {rid in set(df.request_id)}, rows {len(df)}, stderr {res.stderr[-500:]!r}'
                )
        check(['monitor', '--from-log', '--no-retrain'])
    finally:
        with sqlite3.connect(db) as con:
            con.execute('DELETE FROM predictions WHERE request_id = ?', (rid,))
    assert not problems, 'with a garbage row in predictions.db:\n- ' + '\n- '.join(problems)
