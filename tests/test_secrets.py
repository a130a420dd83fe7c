"""Passwords in settings stay in memory: planted in every URL setting, then searched for in everything written.

The tracking store and the prediction log are PostgreSQL databases with a password (see test_postgres.py for the
server); the data source is an HTTP URL with basic-auth credentials, served by the test.
"""

import base64
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from functools import partial
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import MLOPS_NB, cli, make_project, manifests
from mlops_nb.registry.server import free_port
from test_postgres import pg_database  # noqa: F401 (a fixture)

TARGET = 'employed'


class _Auth(http.server.SimpleHTTPRequestHandler):
    "Files of `directory`, to requests with one of the basic-auth credentials `expected` only"

    expected = ()

    def _allowed(self):
        if self.headers.get('Authorization') in self.expected:
            return True
        self.send_response(401)
        self.send_header('WWW-Authenticate', 'Basic realm="data"')
        self.end_headers()
        return False

    def do_GET(self):
        if self._allowed():
            super().do_GET()

    def do_HEAD(self):
        if self._allowed():
            super().do_HEAD()

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # a reader that had what it needed

    def log_message(self, *args):
        pass


def _data_server(folder: Path, user: str, *passwords: str):
    handler = type(
        'Handler',
        (_Auth,),
        {'expected': ['Basic ' + base64.b64encode(f'{user}:{pw}'.encode()).decode() for pw in passwords]},
    )
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(handler, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _files_with(root: Path, secret: str):
    "The files under `root` holding `secret`, but settings.ini, where the person put it"
    return [
        str(p.relative_to(root))
        for p in root.rglob('*')
        if p.is_file() and p.name != 'settings.ini' and secret.encode() in p.read_bytes()
    ]


def _rows_with(uri: str, secret: str):
    "`[(table, column)]` of the text columns of the database at `uri` holding `secret`"
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as con:
            cols = con.execute(
                sqlalchemy.text(
                    'SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = '
                    "'public' AND data_type IN ('text', 'character varying')"
                )
            ).fetchall()
            assert len({t for t, _ in cols}) > 20, 'the MLflow store and the prediction log are there'
            return [
                (t, c)
                for t, c in cols
                if con.execute(
                    sqlalchemy.text(f'SELECT count(*) FROM "{t}" WHERE "{c}" LIKE :s'), {'s': f'%{secret}%'}
                ).scalar()
            ]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_password_in_every_url_setting_lands_nowhere(tmp_path, pg_database):
    "Run (settings and -p), a run that fails and its resume, serve with feedback, report, show, diff, settings: no password anywhere"
    from sqlalchemy.engine import make_url
    from mlops_nb.stages.sources import bundled

    db_password, token, token2 = make_url(pg_database).password, f'tok{uuid.uuid4().hex}', f'tok{uuid.uuid4().hex}'
    assert db_password and db_password in pg_database
    (tmp_path / 'www').mkdir()
    bundled('acs_employment_ma').head(3000).to_csv(tmp_path / 'www' / 'acs.csv', index=False)
    srv = _data_server(tmp_path / 'www', 'ann', token, token2)
    source = f'http://ann:{token}@127.0.0.1:{srv.server_address[1]}/acs.csv'
    project = make_project(tmp_path / 'p')
    ini = project / 'settings.ini'
    ini.write_text(
        ini.read_text()
        .replace('tracking_uri = sqlite:///mlflow.db', f'tracking_uri = {pg_database}')
        .replace('prediction_log =\n', f'prediction_log = {pg_database}\n')
    )
    outputs = []

    def run(*args, code=0):
        res = cli(project, *args)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode == code, (args, res.stdout[-2000:], res.stderr[-3000:])
        return res

    try:
        run('run', '-p', f'data.source={source}', '--approve-as', 'tester')
        # a settings error fails the run in a stage; the run resumes with the password put back from settings.ini
        ini.write_text(ini.read_text().replace('source = acs_employment_ma', f'source = {source}'))
        run('run', '-p', 'evaluate.slice_columns=NO_SUCH_COLUMN', code=1)
        failed = manifests(project)[-1]
        assert failed['status'] == 'failed' and '***' in failed['settings']['mlflow']['tracking_uri']
        res = run(
            'run', '--resume', failed['run_id'], code=1
        )  # the slice column is still wrong, but the store is reached
        assert 'NO_SUCH_COLUMN' in res.stdout + res.stderr
        ini.write_text(ini.read_text().replace(token, token2))  # the password changed, nothing else
        run('run')
        a, b = manifests(project)[0]['run_id'], manifests(project)[-1]['run_id']
        diff = run('diff', a, b).stdout
        assert 'data.source' not in diff, 'runs that differ only in a password: no difference in that setting'
        run('show', b), run('report'), run('settings'), run('models')

        from mlflow import MlflowClient

        MlflowClient(pg_database, registry_uri=pg_database).set_registered_model_alias(
            'acs-employment', 'champion', '1'
        )  # gated out on this sample

        env = {**{k: v for k, v in os.environ.items() if not k.startswith('MLFLOW_')}, 'PYTHONWARNINGS': 'ignore'}
        proc = subprocess.Popen(
            [*MLOPS_NB, '--settings', str(ini), 'serve', '--port', str(free_port())],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = _wait_for(proc)
            rows = (
                pd.read_parquet(next(project.glob('runs/*/artifacts/01_ingest/data.parquet')))
                .head(5)
                .drop(columns=[TARGET, 'id', 'year'], errors='ignore')
            )
            r = httpx.post(
                url + '/invocations',
                json={'dataframe_split': json.loads(rows.to_json(orient='split', index=False))},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            fb = httpx.post(
                url + '/feedback',
                json={'feedback': [{'request_id': r.headers['x-request-id'], 'label': 1}]},
                timeout=30,
            )
            assert fb.status_code == 202, fb.text
            outputs.append(httpx.get(url + '/metrics', timeout=30).text + httpx.get(url + '/ping', timeout=30).text)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            outputs.append(out + err)
        finally:
            if proc.poll() is None:
                proc.kill()
        # a prediction log that cannot be used: one line before the server starts, its password masked
        res = run(
            'serve',
            '--port',
            str(free_port()),
            '-p',
            f'serve.prediction_log=postgresql://ann:{token}@127.0.0.1:9/log',
            code=1,
        )
        assert (
            len(res.stderr.splitlines()) == 1
            and 'the prediction log postgresql://ann:***@127.0.0.1:9/log cannot be used' in res.stderr
        ), res.stderr
    finally:
        srv.shutdown()

    for secret in (db_password, token, token2):
        assert not _files_with(project, secret), (
            'in files under the project (runs, reports, logs, notebooks, artifacts)'
        )
        assert not [o for o in outputs if secret in o], 'in printed lines'
        assert not _rows_with(pg_database, secret), 'in the MLflow store or the prediction log'
    assert any('postgresql://' in o and ':***@' in o for o in outputs), 'URLs are shown, masked'


def _wait_for(proc, timeout=120):
    "The URL `mlops-nb serve` listens on, once it answers"
    t0 = time.time()
    port = next(a for a in reversed(proc.args) if a.isdigit())
    url = f'http://127.0.0.1:{port}'
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            if httpx.get(url + '/ping', timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f'{url} did not answer within {timeout} s')
