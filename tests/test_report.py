"""Run reports, the runs dashboard, what changed between two runs, and the commands that render and serve them."""

import base64
import queue
import re
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urljoin

import pandas as pd
import pytest

from conftest import MLOPS_NB, batch_without, cli, manifests

STAGES = ['ingest', 'validate', 'features', 'train', 'evaluate', 'audit', 'register']
EVIL = '<script>alert(1)</script>'


@pytest.fixture(scope='module')
def runs(approved):
    """Three runs: approved at run time; fewer iterations, while the dashboard cannot be written; failing in validate on a batch
    that lacks a column and has one named like markup"""
    project, first = approved
    blocker = project / 'runs' / 'index.html'
    blocker.unlink()
    blocker.mkdir()  # a folder where the dashboard goes: rendering it fails
    second = cli(project, 'run', '-p', 'train.max_iter=20')
    blocker.rmdir()
    batch = batch_without(project)
    csv = project / batch[1].split('=', 1)[1]
    pd.read_csv(csv).assign(**{EVIL: 1}).to_csv(csv, index=False)
    failed = cli(project, 'run', *batch)
    ms = manifests(project)
    assert [m['status'] for m in ms] == ['completed', 'completed', 'failed']
    return project, (first, second, failed), ms


class Links(HTMLParser):
    "Every href and src of a page, and every id"

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'):
            self.ids.add(a['id'])
        if tag == 'a' and a.get('href'):
            self.links.append(a['href'])
        if tag in ('img', 'script', 'link') and (a.get('src') or a.get('href')):
            self.links.append(a.get('src') or a.get('href'))


def links_of(html):
    p = Links()
    p.feed(html)
    return p


def assert_links_resolve(page):
    "Every link of the page at `page` (a file) names a file that exists, or an id on the page"
    html = page.read_text()
    p = links_of(html)
    assert p.links
    for href in p.links:
        assert not href.startswith(('http:', 'https:', '//')), (
            f'{page.name} fetches {href}: pages must work with no network'
        )
        if href.startswith('data:'):
            continue
        path, _, frag = href.partition('#')
        if not path:
            assert frag in p.ids, f'{page.name}: anchor #{frag} has no target'
        else:
            assert (page.parent / path).exists(), f'{page.name}: {href} does not resolve'


def report(project, m):
    return project / 'runs' / m['run_id'] / 'report.html'


def decision_text(html):
    return unescape(
        re.sub(
            r'<[^>]+>', ' ', re.search(r'<div class="decision[^"]*" id="decision">(.*?)</div>\s*<table', html, re.S)[1]
        )
    )


def section(html, stage):
    return html.split(f'id="stage-{stage}"')[1].split('</section>')[0]


def test_every_run_has_a_report_with_the_decision_first(runs):
    project, _, ms = runs
    first, second = (report(project, m).read_text() for m in ms[:2])
    assert 'approved: acs-employment version 1 became champion' in decision_text(first)
    assert 'approved by tester' in decision_text(first)
    assert 'pending approval: acs-employment version 2' in decision_text(second)
    assert f'mlops-nb approve {ms[1]["run_id"]} --by NAME' in decision_text(second)
    for html in (first, second):
        assert html.index('id="decision"') < html.index('<nav class="toc"') < html.index('<section class="stage"')
        assert re.findall(r'<section class="stage" id="stage-(\w+)">', html) == STAGES
        for i, s in enumerate(STAGES, 1):
            assert f'href="#stage-{s}"' in html and f'href="0{i}_{s}.ipynb"' in html, s
        assert 'result = evaluate(' not in html and 'from mlops_nb' not in html, 'inputs are hidden'
        assert html.count('data:image/png;base64,') >= 2, 'the stage plots are embedded'
        assert '<script src' not in html and '<link rel="stylesheet"' not in html, 'nothing is fetched'
        assert 'The gate' in html and 'roc_auc change' in html, 'the criteria with their values are at the top'
    for m in ms:
        assert_links_resolve(report(project, m))
        ids = Counter(re.findall(r'\sid="([^"]+)"', report(project, m).read_text()))
        assert [i for i, n in ids.items() if n > 1] == [], (
            'ids are unique (every stage has a heading Verdict or Result)'
        )
    for m in ms[:2]:
        writable = [p for p in (project / 'runs' / m['run_id']).rglob('*') if p.is_file() and p.stat().st_mode & 0o222]
        assert writable == [], 'a completed run folder, its report included, is read-only'


def test_what_a_reader_meets_in_a_report(runs):
    project, _, ms = runs
    first, second = (report(project, m).read_text() for m in ms[:2])
    assert re.search(r'<tr><th>trigger</th><td>by hand, by [^<{]+</td></tr>', first), 'the trigger in words, not a dict'
    register = section(first, 'register')
    assert 'approved after this stage: acs-employment version 1 became champion' in register, (
        'the banner and the register table agree'
    )
    assert register.index('after this stage') < register.index('class="nb"') and 'pending approval' in register
    assert 'after this stage' not in section(second, 'register'), 'not decided yet: nothing after the stage'
    validate = section(first, 'validate')
    assert 'no anomaly:' in validate and 'data:image/png' not in validate, (
        'no empty panels when there is nothing to draw'
    )
    train = section(first, 'train')
    assert 'sk-top-container' in train and '<script' not in train and 'href="http' not in train, (
        "scikit-learn's diagram, static"
    )


def test_a_column_named_like_markup_is_text_on_every_page(runs):
    project, _, ms = runs
    failed = report(project, ms[2]).read_text()
    assert EVIL not in failed and '&lt;script&gt;alert(1)&lt;/script&gt;' in section(failed, 'validate'), (
        'the new column, escaped'
    )
    pages = [report(project, m) for m in ms] + [
        project / 'runs' / 'index.html',
        *(project / 'runs' / 'diff').glob('*.html'),
    ]
    for page in pages:
        assert EVIL not in page.read_text() and '<script' not in page.read_text(), page.name


def test_failed_run_report_says_where_and_why(runs):
    project, (_, _, failed), ms = runs
    assert failed.returncode == 1 and 'stage validate failed' in failed.stderr, (
        'rendering changes nothing in how a run fails'
    )
    html = report(project, ms[2]).read_text()
    text = decision_text(html)
    assert 'failed in stage validate' in text and "column 'DEYE': missing_column" in text
    assert 'href="02_validate.ipynb"' in html and 'MlopsError' in html.split('id="stage-validate"')[1], (
        'the failing cell is shown'
    )
    for s in STAGES[2:]:
        section = html.split(f'id="stage-{s}"')[1].split('</section>')[0]
        assert 'not run: the run stopped before this stage' in section, s


def test_a_rendering_failure_is_a_warning_not_a_failed_run(runs):
    project, (_, second, _), ms = runs
    assert second.returncode == 0, second.stderr
    assert re.search(r'warning: report pages not rendered \(\w+Error: .*index\.html', second.stdout), second.stdout
    assert f'mlops-nb report {ms[1]["run_id"]}' in second.stdout, 'the warning says how to render again'
    assert ms[1]['status'] == 'completed' and report(project, ms[1]).is_file()


def test_dashboard_lists_every_run_with_charts(runs):
    project, _, ms = runs
    index = project / 'runs' / 'index.html'
    html = index.read_text()
    rows = re.findall(r'<tr class="run status-(\w+)" data-run="([^"]+)">', html)
    assert rows == [(m['status'], m['run_id']) for m in reversed(ms)], 'every run, newest first'
    row = html.split(f'data-run="{ms[0]["run_id"]}"')[1].split('</tr>')[0]
    for cell in (
        'train',
        'completed',
        ms[0]['summary']['data_version'],
        'v1',
        'approved',
        'by hand, by',
        f'{ms[0]["summary"]["metrics"]["roc_auc"]:.4f}',
        ms[0]['created'][:10],
    ):
        assert cell in row, cell
    assert 'champion: acs-employment version 1' in html
    svgs = {
        fid: base64.b64decode(data).decode()
        for fid, data in re.findall(
            r'<figure class="chart" id="([\w-]+)"><img src="data:image/svg\+xml;base64,([^"]+)"', html
        )
    }
    assert set(svgs) == {'chart-key-metric', 'chart-champion'}, 'no monitoring charts without monitoring runs'
    assert all(s.lstrip().startswith('<?xml') and '<svg' in s for s in svgs.values())
    for label in ('v1', 'v2', 'gate: roc_auc at least 0.85', f'{ms[1]["summary"]["metrics"]["roc_auc"]:.3f}'):
        assert label in svgs['chart-key-metric'], f'{label} is written on the chart, not hidden behind a hover'
    assert 'v1 approved' in svgs['chart-champion'] and 'by tester' in svgs['chart-champion']
    assert f'href="diff/{ms[0]["run_id"]}_vs_{ms[1]["run_id"]}.html"' in html
    assert_links_resolve(index)


def test_diff_names_the_likely_cause(runs):
    project, _, ms = runs
    a, b = ms[0]['run_id'], ms[1]['run_id']
    res = cli(project, 'diff', a[-6:], b[-6:])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert 'likely cause: train.max_iter: 200 -> 20 (the first changed input in stage order)' in out
    assert 'the champion evaluate compared with: version None -> 1' in out
    assert 'data version      same' in out and 'code commit       same' in out
    assert 'train.max_iter = 200 -> 20' in out and 'packages          same' in out
    assert re.search(r'train +artifacts/04_train/model +\w{12} -> \w{12}', out)
    assert not re.search(r'features +artifacts/03_features/train.parquet', out), (
        'unchanged outputs are not listed as changed'
    )
    assert re.search(r'roc_auc +0\.\d{4} -> 0\.\d{4} \([+-]0\.\d{4}\)', out)
    assert re.search(r'SEX=\d \w+ +0\.\d{4} -> \d\.\d{4}', out), 'per-group fairness rates that moved'
    page = project / 'runs' / 'diff' / f'{a}_vs_{b}.html'
    assert f'page  runs/diff/{page.name}' in out and 'likely cause: train.max_iter: 200 -&gt; 20' in page.read_text()
    assert_links_resolve(page)
    res = cli(project, 'diff', a, 'no-such-run')
    assert res.returncode == 1 and 'error: no run' in res.stderr and 'Traceback' not in res.stderr


def test_report_command_renders_one_run_or_all(runs):
    project, _, ms = runs
    page = report(project, ms[0])
    page.unlink()
    res = cli(project, 'report', ms[0]['run_id'][-6:])
    assert res.returncode == 0, res.stderr
    assert f'report     runs/{ms[0]["run_id"]}/report.html' in res.stdout and 'dashboard  runs/index.html' in res.stdout
    assert 'approved by tester' in page.read_text() and not page.stat().st_mode & 0o222
    res = cli(project, 'report')
    assert res.returncode == 0 and '3 reports rendered' in res.stdout, res.stderr
    assert 'reports: 100%' in res.stderr and '3/3' in res.stderr, 'a progress bar over the runs'
    res = cli(project, 'report', 'no-such-run')
    assert res.returncode == 1 and 'error: no run' in res.stderr


def lines_of(proc):
    "A queue of the lines `proc` prints, read by a thread"
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in proc.stdout], daemon=True).start()
    return q


def wait_for(q, prefix, timeout=60):
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line.strip(), seen
    raise AssertionError(f'no line starting {prefix!r} in {timeout} s: {seen}')


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode('utf-8', 'replace')


def test_ui_serves_the_dashboard_and_reports_on_loopback(runs):
    project, _, ms = runs
    proc = subprocess.Popen(
        [*MLOPS_NB, '--settings', str(project / 'settings.ini'), 'ui', '--port', '0'],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        q = lines_of(proc)
        line, _ = wait_for(q, 'dashboard  http://127.0.0.1:')
        url = line.split()[-1]
        mlflow, _ = wait_for(q, 'MLflow UI')
        assert f'mlflow ui --backend-store-uri sqlite:///{project.resolve()}/mlflow.db' in mlflow
        status, html = get(url)
        assert status == 200 and all(m['run_id'] in html for m in ms)
        hrefs = [h for h in links_of(html).links if not h.startswith(('data:', '#'))]
        assert len(hrefs) >= 4
        for h in hrefs:
            status, body = get(urljoin(url, h))
            assert status == 200 and body, h
        status, body = get(urljoin(url, f'{ms[0]["run_id"]}/01_ingest.ipynb'))
        assert status == 200 and '"cells"' in body, 'the executed notebooks are served too'
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0, 'SIGTERM stops it like Ctrl-C'


def test_approving_later_renders_the_report_and_dashboard_again(runs):
    project, _, ms = runs
    res = cli(project, 'approve', ms[1]['run_id'], '--by', 'bob', '--note', 'fewer iterations, better log loss')
    assert res.returncode == 0, res.stderr
    text = decision_text(report(project, ms[1]).read_text())
    assert (
        'approved: acs-employment version 2 became champion' in text
        and 'approved by bob' in text
        and 'it replaced version 1' in text
    )
    html = (project / 'runs' / 'index.html').read_text()
    assert 'champion: acs-employment version 2' in html and 'fewer iterations, better log loss' in html
