"""A shared tracking server: `mlops-nb tracking-server` on SQLite and on PostgreSQL, the pipeline against it.

The PostgreSQL tests need a server: `.ci/run` starts one (`bash .ci/postgres start`, Debian's postgresql on
127.0.0.1) and exports its URI as MLOPS_NB_TEST_POSTGRES. Without it they skip, except in CI, where they fail.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import MLOPS_NB, cli, make_project, manifests

PG_ENV = 'MLOPS_NB_TEST_POSTGRES'


def postgres_uri():
    "The test server's URI, or skip (locally) / fail (in CI) without one"
    if os.environ.get(PG_ENV):
        return os.environ[PG_ENV]
    why = f'{PG_ENV} is not set: start a server with `bash .ci/postgres start` and export the URI it prints'
    if os.environ.get('CI'):
        pytest.fail(f'{why} (.ci/run does this; in CI these tests must run)')
    pytest.skip(why)


@pytest.fixture
def pg_database():
    "A fresh database on the test server, dropped afterwards"
    import sqlalchemy

    admin = sqlalchemy.engine.make_url(postgres_uri())
    name = f'mlops_nb_test_{uuid.uuid4().hex[:8]}'
    engine = sqlalchemy.create_engine(admin, isolation_level='AUTOCOMMIT')
    with engine.connect() as con:
        con.execute(sqlalchemy.text(f'CREATE DATABASE {name}'))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as con:
        con.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)'))
    engine.dispose()


class TrackingServer:
    "`mlops-nb tracking-server ARGS` in the background, read until it answers"

    def __init__(self, cwd: Path, *args):
        env = {k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}
        self.log = open(cwd / 'tracking-server.log', 'w')
        self.proc = subprocess.Popen(
            [*MLOPS_NB, 'tracking-server', '--port', '0', *args],
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.lines, q = [], queue.Queue()
        threading.Thread(target=lambda: [q.put(l) for l in self.proc.stdout] + [q.put(None)], daemon=True).start()
        self.q = q
        while True:  # the server prints `ready: URL` once /health answers
            try:
                line = q.get(timeout=120)
            except queue.Empty:
                self.fail('did not answer within 120 s')
            if line is None:
                self.fail(f'exited with {self.proc.wait()}')
            self.lines.append(line.rstrip())
            if line.startswith('ready: '):
                break
        self.uri = next(l.split('= ', 1)[1] for l in self.lines if l.strip().startswith('tracking_uri = '))

    def fail(self, why):
        self.proc.kill()
        self.log.flush()
        pytest.fail(
            f'tracking-server {why}:\n' + '\n'.join(self.lines) + '\n' + Path(self.log.name).read_text()[-3000:]
        )

    def stop(self):
        "Ctrl-C: the server stops cleanly, exit code 0"
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(60)
        while (line := self.q.get(timeout=10)) is not None:
            self.lines.append(line.rstrip())
        self.log.close()
        return rc


def tree(pid: int):
    "`[(pid, rss bytes, command line)]` of `pid` and its descendants"
    kids = {}
    for p in Path('/proc').iterdir():
        if not p.name.isdigit():
            continue
        try:
            kids.setdefault(int((p / 'stat').read_text().rsplit(')', 1)[1].split()[1]), []).append(int(p.name))
        except OSError:
            continue
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        todo += kids.get(q, [])
        try:
            rss = next(
                int(l.split()[1]) * 1024
                for l in Path(f'/proc/{q}/status').read_text().splitlines()
                if l.startswith('VmRSS:')
            )
            out.append((q, rss, Path(f'/proc/{q}/cmdline').read_text().replace('\0', ' ')))
        except (OSError, StopIteration):
            continue
    return out


def use_server(project: Path, uri: str):
    "Point the project's settings.ini at the tracking server"
    s = project / 'settings.ini'
    text, n = re.subn(r'(?m)^tracking_uri = .*$', f'tracking_uri = {uri}', s.read_text())
    assert n == 1
    s.write_text(text)


def test_server_on_the_default_sqlite_store_is_small(tmp_path):
    "Without --backend-store it serves the project's SQLite store: two server processes, no job runner, clean Ctrl-C"
    project = make_project(tmp_path / 'p')
    srv = TrackingServer(project)
    try:
        assert f'  backend store  sqlite:///{project.resolve()}/mlflow.db' in srv.lines
        assert srv.uri.startswith('http://127.0.0.1:') and '  [mlflow]' in srv.lines
        procs = tree(srv.proc.pid)
        cmds = '\n'.join(c for _, _, c in procs)
        assert len(procs) == 3, cmds  # this command, `mlflow server`, one uvicorn worker
        assert 'huey' not in cmds and '_job_runner' not in cmds, cmds
        assert sum(r for _, r, _ in procs) < 1.0 * 2**30, [(c[:60], r) for _, r, c in procs]
        from mlflow.tracking import MlflowClient

        c = MlflowClient(srv.uri)
        exp = c.create_experiment('team')
        assert c.get_experiment(exp).artifact_location == f'mlflow-artifacts:/{exp}', 'artifacts go through the server'
    finally:
        rc = srv.stop()
    assert rc == 0 and srv.lines[-1] == 'MLflow tracking server stopped', srv.lines
    assert 'Traceback' not in Path(srv.log.name).read_text()


def test_server_refuses_a_bad_store(tmp_path):
    "A database it cannot open is one error line, before anything starts"
    res = subprocess.run(
        [
            *MLOPS_NB,
            'tracking-server',
            '--backend-store',
            'postgresql://u:secret@127.0.0.1:1/none',
            '--artifacts',
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1 and res.stderr.startswith(
        'error: cannot open the backend store postgresql://u:***@127.0.0.1:1/none'
    )
    assert 'secret' not in res.stderr + res.stdout and 'Traceback' not in res.stderr


@pytest.mark.slow
def test_pipeline_against_a_postgres_tracking_server(tmp_path, pg_database):
    "Two people's runs at once, approvals racing, a third run, models, rollback and serve's registry, all through the server"
    srv = TrackingServer(tmp_path, '--backend-store', pg_database, '--artifacts', str(tmp_path / 'server-artifacts'))
    try:
        ann, bob = make_project(tmp_path / 'ann'), make_project(tmp_path / 'bob')
        for p in (ann, bob):
            use_server(p, srv.uri)

        # two runs from two processes at the same moment, on a new server: both land
        with ThreadPoolExecutor(2) as ex:
            results = list(ex.map(lambda p: cli(p, 'run'), (ann, bob)))
        for res in results:
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        (ma,), (mb,) = manifests(ann), manifests(bob)
        assert {ma['summary']['version'], mb['summary']['version']} == {'1', '2'}
        assert ma['summary']['decision'] == mb['summary']['decision'] == 'pending_approval', (
            ma['stages'][-1],
            mb['stages'][-1],
        )
        assert ma['mlflow']['experiment_id'] == mb['mlflow']['experiment_id'], 'one experiment, created once'

        # both approve at the same moment: the champion moves once, the other is refused (compare-and-set under the lock)
        with ThreadPoolExecutor(2) as ex:
            approvals = list(ex.map(lambda p: cli(p, 'approve', manifests(p)[0]['run_id'], '--by', p.name), (ann, bob)))
        assert sorted(r.returncode for r in approvals) == [0, 1], [r.stdout + r.stderr for r in approvals]
        refused = next(r for r in approvals if r.returncode == 1)
        assert 'changed since this decision was made' in refused.stderr, refused.stderr
        winner = (ma if approvals[0].returncode == 0 else mb)['summary']['version']

        # a third run, trained again (its train would be reused from ann's first), is evaluated against the champion,
        # downloaded through the server, and approved at run time
        res = cli(ann, 'run', '--no-cache', '--approve-as', 'tester')
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        m3 = manifests(ann)[-1]
        assert m3['summary']['version'] == '3' and 'approved by tester: champion' in res.stdout
        register = next(r for r in m3['stages'] if r['name'] == 'register')['result']
        assert register['compared_with'] == winner, register

        res = cli(bob, 'models')
        assert res.returncode == 0, res.stderr
        rows = {l.split()[0]: l for l in res.stdout.splitlines()[2:]}
        assert set(rows) == {'1', '2', '3'} and 'champion' in rows['3'] and 'previous-champion' in rows[winner], (
            res.stdout
        )

        from mlops_nb.serving.models import MlflowRegistry

        reg = MlflowRegistry(srv.uri, 'acs-employment', tmp_path / 'serve-cache')
        assert reg.version_of('champion') == '3' and reg.load('3').version == '3'

        res = cli(bob, 'rollback', '--by', 'bob', '--note', 'version 3 misbehaves')
        assert res.returncode == 0 and f'champion is version {winner} again (was 3)' in res.stdout, (
            res.stdout + res.stderr
        )
        assert reg.version_of('champion') == winner, "serve's hot reload sees the move"

        from mlflow.tracking import MlflowClient
        from mlops_nb.registry.gate import history

        c = MlflowClient(srv.uri, registry_uri=srv.uri)
        assert [m.name for m in c.search_registered_models()] == ['acs-employment'], 'no lock left behind'
        assert [e['event'] for e in history(c, 'acs-employment')] == ['approved', 'approved', 'rolled_back']
        exp = c.get_experiment(ma['mlflow']['experiment_id'])
        assert exp.artifact_location.startswith('mlflow-artifacts:'), exp.artifact_location
        assert any((tmp_path / 'server-artifacts').rglob('MLmodel')), 'models are stored by the server'
        for p in (ann, bob):
            assert not (p / 'mlartifacts').exists() and not (p / 'mlflow.db').exists()
    finally:
        rc = srv.stop()
    assert rc == 0, srv.lines


def test_champion_lock_on_a_postgres_store(pg_database):
    "The registry lock of a shared store excludes concurrent movers: no update lost in read-modify-write cycles"
    import time
    from mlflow.tracking import MlflowClient
    from mlops_nb.registry.gate import _model_lock

    clients = [MlflowClient(pg_database, registry_uri=pg_database) for _ in range(4)]
    clients[0].create_registered_model('counter', tags={'n': '0'})

    def bump(c):
        for _ in range(3):
            with _model_lock(c, 'counter'):
                n = int(c.get_registered_model('counter').tags['n'])
                time.sleep(0.05)  # a move's read and write, far apart
                c.set_registered_model_tag('counter', 'n', str(n + 1))

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(bump, clients))
    assert clients[0].get_registered_model('counter').tags['n'] == '12'
    assert [m.name for m in clients[0].search_registered_models()] == ['counter'], 'the lock is released'
