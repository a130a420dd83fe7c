"""Serving speed of `mlops-nb serve` against `mlflow models serve`, on the same model, in one run on this machine.

A model is trained on a sample of the bundled ACS data with the default settings (the gradient-boosting
pipeline) and registered as champion in a temporary MLflow store. Both servers are started on 127.0.0.1
(`mlflow models serve --env-manager local`, and `mlops-nb serve` with its prediction log on) and measured
in turns with the same client: a fixed number of single-row requests at concurrency 1, 8 and
32 (requests/s, median and 99th-percentile latency, errors), then one 10,000-row request at a time
(rows/s). The client keeps one HTTP/1.1 keep-alive connection per concurrent request and sends
pre-encoded bodies, so the load is bounded and the client costs little CPU. Both servers must give the
same predictions; at the end mlops-nb is stopped with SIGTERM and its prediction log must hold every
request it answered.

With --soak SECONDS each server in turn is then held under load for that long (--soak-concurrency
connections, default 64, single-row requests or a cycle of small ones): requests/s, latency, errors, and its
process tree's resident memory every second (start, max, end, slope over the last half); after the
SIGTERM, mlops-nb's prediction log must hold every answer it sent, by request id, and no half-written row.
--soak-only skips the other measurements.

Usage: python benchmarks/serve.py [--max-rows N] [--requests K] [--big-repeat R] [--payload-only]
                                  [--soak SECONDS [--soak-concurrency C] [--soak-rows 1,5,20] [--soak-only]]
"""

import argparse
import asyncio
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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
    pkgs = (
        'mlops-nb',
        'mlflow',
        'scikit-learn',
        'pandas',
        'numpy',
        'starlette',
        'fastapi',
        'uvicorn',
        'uvloop',
        'httptools',
        'orjson',
        'sqlalchemy',
    )

    def v(p):
        try:
            return version(p)
        except Exception:
            return 'not installed'

    print('versions: python ' + platform.python_version() + ', ' + ', '.join(f'{p} {v(p)}' for p in pkgs))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def build_model(project: Path, max_rows: int):
    "Train with the stage functions into project/runs/bench, register the model as champion; the holdout features"
    import inspect
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from mlops_nb.stages.data import ingest
    from mlops_nb.stages.features import make_features, model_input
    from mlops_nb.stages.train import train
    from mlops_nb.core.project import load_project
    from mlops_nb.stages.validate import validate

    p = load_project(project / 'settings.ini')
    run = project / 'runs' / 'bench'
    ingest(str(run), max_rows=max_rows)
    kw = (
        {'reference': 'none'} if 'reference' in inspect.signature(validate).parameters else {}
    )  # no champion to compare with yet
    validate(str(run), **kw)
    make_features(str(run))
    t = train(str(run), model='hist_gradient_boosting')  # the train notebook's default boosted trees, as a built-in
    c = MlflowClient(p.tracking_uri, registry_uri=p.tracking_uri)
    name = p.settings['project']['model_name']
    try:
        c.create_registered_model(name)
    except Exception:
        pass
    mv = c.create_model_version(name, str(run / 'artifacts/04_train/model'), tags={'mlops_nb.run_dir': str(run)})
    c.set_registered_model_alias(name, 'champion', mv.version)
    features = json.loads((run / 'artifacts/03_features/features.json').read_text())
    hold = model_input(pd.read_parquet(run / 'artifacts/03_features/holdout.parquet'), features)
    return p, name, hold, t.metrics


def wait_ready(port: int, proc, timeout: float = 180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f'server exited with {proc.returncode}: see its log {proc.args}')
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{port}/ping', timeout=2) as r:
                if r.status == 200:
                    return time.time() - t0
        except OSError:
            time.sleep(0.2)
    raise RuntimeError('server did not start')


def post(port: int, body: bytes):
    req = urllib.request.Request(
        f'http://127.0.0.1:{port}/invocations', data=body, headers={'Content-Type': 'application/json'}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())['predictions']


# -- the load client: raw HTTP/1.1 on keep-alive connections, bodies encoded beforehand


async def _response(reader):
    status = int((await reader.readline()).split()[1])
    length, close, rid = None, False, None
    while (line := await reader.readline()) not in (b'\r\n', b''):
        k, _, v = line.partition(b':')
        k = k.strip().lower()
        if k == b'content-length':
            length = int(v)
        elif k == b'connection' and v.strip().lower() == b'close':
            close = True
        elif k == b'x-request-id':
            rid = v.strip().decode()
    if length is None:
        raise ValueError('response without content-length')
    await reader.readexactly(length)
    return status, close, rid


async def load(port: int, bodies: list, total: int, concurrency: int, seconds: float = 0):
    "Send `total` requests from `concurrency` connections, or as many as `seconds` allow; (wall seconds, latencies of answers, errors by kind, answers' request ids)"
    lat, errors, ids = [], Counter(), []
    end = time.perf_counter() + seconds
    jobs = (
        itertools.takewhile(lambda _: time.perf_counter() < end, itertools.count()) if seconds else iter(range(total))
    )

    async def worker():
        reader = writer = None
        for i in jobs:
            body = bodies[i % len(bodies)]
            msg = (
                b'POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                b'Content-Length: %d\r\n\r\n' % len(body)
            ) + body
            t = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection('127.0.0.1', port)
                writer.write(msg)
                status, close, rid = await asyncio.wait_for(_response(reader), 120)
                lat.append(time.perf_counter() - t)
                if rid:
                    ids.append(rid)
                if status != 200:
                    errors[f'status {status}'] += 1
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.TimeoutError) as e:
                errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, lat, errors, ids


def run_load(*a):
    try:
        import uvloop

        return uvloop.run(load(*a))
    except ImportError:
        return asyncio.run(load(*a))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float('nan')


def tree_rss(pid: int):
    "Resident memory of process `pid` and its descendants, in bytes"
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f'/proc/{p}/status') as f:
                total += next((int(l.split()[1]) for l in f if l.startswith('VmRSS:')), 0) * 1024
            for t in os.listdir(f'/proc/{p}/task'):
                with open(f'/proc/{p}/task/{t}/children') as f:
                    todo += map(int, f.read().split())
        except OSError:
            pass  # it exited meanwhile
    return total


def soak(port: int, pid: int, bodies: list, seconds: float, concurrency: int):
    "Load the server on `port` for `seconds`, the memory of process `pid`'s tree sampled every second; (figures, request ids answered)"
    import numpy as np

    samples, stop, t0 = [], threading.Event(), time.perf_counter()

    def sample():
        while True:
            samples.append((time.perf_counter() - t0, tree_rss(pid)))
            if stop.wait(1):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wall, lat, err, ids = run_load(port, bodies, 0, concurrency, seconds)
    finally:
        stop.set()
        sampler.join()
    samples.append((time.perf_counter() - t0, tree_rss(pid)))
    t, rss = np.array(samples).T
    rss /= 2**20
    late = t >= t[-1] / 2
    slope = np.polyfit(t[late], rss[late], 1)[0]  # MiB/s
    ok = len(lat) - sum(n for kind, n in err.items() if kind.startswith('status'))
    return dict(
        answered=ok,
        rps=ok / wall,
        p50=pct(lat, 50) * 1000,
        p99=pct(lat, 99) * 1000,
        max_ms=max(lat, default=0) * 1000,
        errors=err.total(),
        error_kinds=dict(err),
        rss_start=rss[0],
        rss_max=rss.max(),
        rss_end=rss[-1],
        slope=slope * 60,
        growth=slope * (t[-1] - t[late][0]),
        samples=len(samples),
    ), ids


def log_check(path: Path, ids: list):
    "The prediction log at `path` against the request ids answered: (missing, logged more than once, half-written rows, integrity check)"
    with sqlite3.connect(path) as db:
        rows = db.execute('select request_id, status, rows, features, predictions from predictions').fetchall()
        integrity = db.execute('pragma integrity_check').fetchone()[0]

    def whole(status, n, features, predictions):
        if status != 200:
            return True  # no features or predictions to hold
        try:
            f, p = json.loads(features), json.loads(predictions)
        except (TypeError, ValueError):
            return False
        return len(p) == n and all(len(v) == n for v in f.values())

    counts = Counter(r[0] for r in rows)
    return (
        sum(i not in counts for i in ids),
        sum(c > 1 for c in counts.values()),
        sum(not whole(*r[1:]) for r in rows),
        integrity,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--max-rows', type=int, default=20000, help='rows of ACS data to train on (default 20000)')
    ap.add_argument(
        '--requests', type=int, default=1000, help='single-row requests per server and concurrency (default 1000)'
    )
    ap.add_argument('--big-repeat', type=int, default=10, help='10,000-row requests per server (default 10)')
    ap.add_argument('--concurrency', default='1,8,32', help='concurrency levels (default 1,8,32)')
    ap.add_argument('--payload-only', action='store_true', help='measure only the 10,000-row payload, not single rows')
    ap.add_argument('--gap-s', type=float, default=0.3, help='pause before each 10,000-row request (default 0.3 s)')
    ap.add_argument(
        '--soak',
        type=float,
        default=0,
        metavar='SECONDS',
        help='then hold each server under load this long (default off)',
    )
    ap.add_argument('--soak-concurrency', type=int, default=64, help='connections during the soak (default 64)')
    ap.add_argument(
        '--soak-rows', default='1', help='rows per soak request; several (1,5,20) are sent in turn (default 1)'
    )
    ap.add_argument(
        '--soak-only', action='store_true', help='only the soak: skip the fixed-count and 10,000-row measurements'
    )
    args = ap.parse_args()
    if args.soak_only and not args.soak:
        ap.error('--soak-only needs --soak SECONDS')
    levels = [] if args.payload_only or args.soak_only else [int(c) for c in args.concurrency.split(',')]
    machine()
    tmp = Path(tempfile.mkdtemp(prefix='mlops-nb-bench-'))
    procs = []
    try:
        (tmp / 'settings.ini').write_text((ROOT / 'settings.ini').read_text())
        os.chdir(tmp)  # stage functions find the project from the working folder
        t0 = time.perf_counter()
        project, name, hold, metrics = build_model(tmp, args.max_rows)
        print(
            f'model: {name} (HistGradientBoosting pipeline, {metrics.get("train_rows")} training rows, '
            f'{metrics.get("n_features")} features) trained and registered in {time.perf_counter() - t0:.1f} s'
        )

        env = {**os.environ, 'MLFLOW_TRACKING_URI': project.tracking_uri, 'PYTHONWARNINGS': 'ignore'}
        ports = {'mlflow': free_port(), 'mlops-nb': free_port()}
        cmds = {
            'mlflow': [
                str(BIN / 'mlflow'),
                'models',
                'serve',
                '-m',
                f'models:/{name}@champion',
                '--env-manager',
                'local',
                '-h',
                '127.0.0.1',
                '-p',
                str(ports['mlflow']),
            ],
            'mlops-nb': [
                str(BIN / 'mlops-nb'),
                '--settings',
                str(tmp / 'settings.ini'),
                'serve',
                '--port',
                str(ports['mlops-nb']),
            ],
        }
        for k, cmd in cmds.items():  # output to files: a full pipe would block a server that logs every request
            out = open(tmp / f'{k}.log', 'w')
            procs.append((k, subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)))
        for k, p in procs:
            print(f'{k} serve ready in {wait_ready(ports[k], p):.1f} s on port {ports[k]}')

        # the same predictions, and the payloads
        records = hold.astype(object).where(hold.notna(), None)
        cols = list(records.columns)
        rows = records.values.tolist()
        check = json.dumps({'dataframe_split': {'columns': cols, 'data': rows[:500]}}).encode()
        answers = {k: post(ports[k], check) for k in ports}
        assert answers['mlflow'] == answers['mlops-nb'], 'the servers disagree'
        print(f'same predictions from both servers on {len(answers["mlflow"])} holdout rows')
        singles = [json.dumps({'dataframe_split': {'columns': cols, 'data': [r]}}).encode() for r in rows[:1000]]
        big_rows = (rows * (10000 // len(rows) + 1))[:10000]
        big = json.dumps({'dataframe_split': {'columns': cols, 'data': big_rows}}).encode()
        assert post(ports['mlflow'], big) == post(ports['mlops-nb'], big), (
            'the servers disagree on the 10,000-row payload'
        )
        sent = 2  # requests mlops-nb answered outside the measurements

        # the two servers take turns at each step, so a change in the machine's background load hits both alike
        results, servers = {}, ('mlflow', 'mlops-nb')
        for k in servers:
            run_load(ports[k], singles, 50, 4)  # warm-up
        sent += 50
        print(f'load average before: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
        for c in levels:
            for k in servers:
                wall, lat, err, _ = run_load(ports[k], singles, args.requests, c)
                err = err.total()
                results[(k, c)] = dict(
                    rps=args.requests / wall, p50=pct(lat, 50) * 1000, p99=pct(lat, 99) * 1000, errors=err
                )
                print(
                    f'  {k:<9} concurrency {c:>2}: {results[(k, c)]["rps"]:8.1f} req/s  p50 {results[(k, c)]["p50"]:7.1f} ms  '
                    f'p99 {results[(k, c)]["p99"]:7.1f} ms  errors {err}',
                    flush=True,
                )
            sent += args.requests
        if not args.soak_only:
            big_lat, big_err = {k: [] for k in servers}, dict.fromkeys(servers, 0)
            for r in range(args.big_repeat):
                for k in servers if r % 2 == 0 else servers[::-1]:  # either server goes first in half of the rounds
                    # a pause first, so that what a server still does after its answer (mlops-nb's log writer waits up to
                    # 0.2 s, then encodes and writes the 10,000 rows) is not measured as the other server's time
                    time.sleep(args.gap_s)
                    _, lat, err, _ = run_load(ports[k], [big], 1, 1)
                    big_lat[k] += lat
                    big_err[k] += err.total()
            sent += args.big_repeat
            for k in servers:
                results[(k, 'big')] = dict(
                    rows_s=10000 * len(big_lat[k]) / sum(big_lat[k]),
                    p50=pct(big_lat[k], 50) * 1000,
                    min=min(big_lat[k]) * 1000,
                    max=max(big_lat[k]) * 1000,
                    errors=big_err[k],
                )
                print(
                    f'  {k:<9} 10,000-row payload: {results[(k, "big")]["rows_s"]:10,.0f} rows/s, {10000 / results[(k, "big")]["p50"] * 1000:,.0f} '
                    f'at the median ({results[(k, "big")]["p50"]:.0f} ms '
                    f'per request, min {results[(k, "big")]["min"]:.0f}, max {results[(k, "big")]["max"]:.0f})  errors {big_err[k]}',
                    flush=True,
                )
            # each round sends one request to each server, one after the other: the ratio within a round is the least
            # disturbed by other load on the machine
            pairs = sorted(m / o for m, o in zip(big_lat['mlflow'], big_lat['mlops-nb']))
            print(
                f'  per-round latency ratio mlflow / mlops-nb: median {pct(pairs, 50):.2f} (min {pairs[0]:.2f}, max {pairs[-1]:.2f}, '
                f'{len(pairs)} rounds)'
            )
        soaks, soak_ids = {}, []
        if args.soak:
            sizes = [int(n) for n in args.soak_rows.split(',')]
            bodies = [
                json.dumps(
                    {'dataframe_split': {'columns': cols, 'data': [rows[(i + j) % len(rows)] for j in range(n)]}}
                ).encode()
                for i in range(min(1000, len(rows)))
                for n in sizes
            ]
            for k in servers:
                s, ids = soak(ports[k], dict(procs)[k].pid, bodies, args.soak, args.soak_concurrency)
                s['held'] = dict(procs)[k].poll() is None
                soaks[k] = s
                kinds = ', '.join(f'{n} {kind}' for kind, n in s['error_kinds'].items())
                print(
                    f'  {k:<9} soak {args.soak:g} s at concurrency {args.soak_concurrency}, rows {args.soak_rows}: '
                    f'{s["answered"]:,} answered, {s["rps"]:.1f} req/s  p50 {s["p50"]:.1f} ms  p99 {s["p99"]:.1f} ms  '
                    f'max {s["max_ms"]:.0f} ms  errors {s["errors"]}{f" ({kinds})" if kinds else ""}; '
                    f'{"running" if s["held"] else "EXITED"}; load average {os.getloadavg()[0]:.2f}',
                    flush=True,
                )
                print(
                    f'            process tree RSS: start {s["rss_start"]:.1f} MiB, max {s["rss_max"]:.1f}, end {s["rss_end"]:.1f} '
                    f'({s["samples"]} samples); last half {s["slope"]:+.2f} MiB/min ({s["growth"]:+.2f} MiB)',
                    flush=True,
                )
                if k == 'mlops-nb':
                    soak_ids = ids
                    sent += len(ids)
                    with urllib.request.urlopen(f'http://127.0.0.1:{ports[k]}/health', timeout=30) as r:
                        w = json.loads(r.read())['prediction_log']
                    print(
                        f'            its log writer at the end: {w["pending"]:,} records pending, {w["written"]:,} written, '
                        f'{w["write_errors"]} failed writes',
                        flush=True,
                    )
        print(f'load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')

        # stop mlops-nb gracefully: its prediction log must hold every request
        p = dict(procs)['mlops-nb']
        t0 = time.perf_counter()
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        stop_s = time.perf_counter() - t0
        with sqlite3.connect(tmp / 'predictions.db') as db:
            logged, ok = db.execute('select count(*), sum(status = 200) from predictions').fetchone()
        print(
            f'mlops-nb stopped in {stop_s:.1f} s (exit {p.returncode}); prediction log: {logged} of {sent} requests '
            f'({ok} answered 200)'
        )
        if args.soak:
            missing, twice, half, integrity = log_check(tmp / 'predictions.db', soak_ids)
            print(
                f'soak answers in the log by request id: {len(soak_ids) - missing:,} of {len(soak_ids):,} ({twice} ids logged more than once); '
                f'half-written rows in the whole log: {half}; integrity check: {integrity}'
            )

        if not args.soak_only:
            print()
            print(
                f'{"single-row requests":<22}{"":>6}{"mlflow req/s":>14}{"mlops-nb req/s":>16}{"x":>7}'
                f'{"mlflow p99 ms":>15}{"mlops-nb p99 ms":>17}{"p50 ms (mlflow / mlops-nb)":>29}{"errors":>9}'
            )
            for c in levels:
                m, o = results[('mlflow', c)], results[('mlops-nb', c)]
                print(
                    f'{"concurrency " + str(c):<28}{m["rps"]:>14.1f}{o["rps"]:>16.1f}{o["rps"] / m["rps"]:>7.1f}{m["p99"]:>15.1f}'
                    f'{o["p99"]:>17.1f}{m["p50"]:>16.1f} / {o["p50"]:<10.1f}{m["errors"]:>4} / {o["errors"]}'
                )
            m, o = results[('mlflow', 'big')], results[('mlops-nb', 'big')]
            print(
                f'{"10,000-row payload":<28}{m["rows_s"]:>14,.0f}{o["rows_s"]:>16,.0f}{o["rows_s"] / m["rows_s"]:>7.1f}  rows/s'
            )
            goals = {
                f'>= 10x requests/s at concurrency {c}': results[('mlops-nb', c)]['rps']
                >= 10 * results[('mlflow', c)]['rps']
                for c in levels
                if c >= 8
            }
            goals.update(
                {
                    f'p99 <= 1/3 of mlflow at concurrency {c}': results[('mlops-nb', c)]['p99']
                    <= results[('mlflow', c)]['p99'] / 3
                    for c in levels
                    if c >= 8
                }
            )
            goals['zero errors'] = all(results[('mlops-nb', c)]['errors'] == 0 for c in [*levels, 'big'])
            goals['every request in the prediction log'] = logged == sent and p.returncode == 0
            goals['>= 3x rows/s on the 10,000-row payload'] = o['rows_s'] >= 3 * m['rows_s']
            print('\ngoals (prediction log on):')
            for g, ok in goals.items():
                print(f'  {"met    " if ok else "NOT met"}  {g}')
            print(
                json.dumps({f'{k}_c{c}': {kk: round(vv, 2) for kk, vv in v.items()} for (k, c), v in results.items()})
            )
        if args.soak:
            m, o = soaks['mlflow'], soaks['mlops-nb']
            print(
                f'\nsoak, mlops-nb / mlflow: requests/s {o["rps"] / m["rps"]:.1f}x ({o["rps"]:.1f} / {m["rps"]:.1f}), '
                f'p99 {o["p99"] / m["p99"]:.3f}x ({o["p99"]:.1f} / {m["p99"]:.1f} ms), p50 {o["p50"] / m["p50"]:.3f}x'
            )
            goals = {
                f'held {args.soak:g} s at concurrency {args.soak_concurrency}': o['held'],
                'zero errors': o['errors'] == 0,
                # the line fitted to the last half's samples, once start-up buffers are in place: at thousands of
                # requests/s, 1% of a few hundred MiB over 30 s is a leak of a few dozen bytes a request
                'flat memory (last half grows < 1% of its RSS)': o['growth'] < 0.01 * o['rss_end'],
                'every answer in the prediction log, once, no half-written row': not missing
                and not twice
                and not half
                and integrity == 'ok'
                and p.returncode == 0,
            }
            print('soak goals (mlops-nb, prediction log on):')
            for g, ok in goals.items():
                print(f'  {"met    " if ok else "NOT met"}  {g}')
            print(
                json.dumps(
                    {
                        f'{k}_soak': {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()}
                        for k, v in soaks.items()
                    }
                )
            )
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
