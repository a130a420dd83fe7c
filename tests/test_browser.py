"""The dashboard and run reports in headless Chromium: rows, charts, links that resolve, no console errors; screenshots kept."""

import shutil
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from conftest import MLOPS_NB, batch_without, cli, manifests
from test_report import lines_of, wait_for

CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason=(
        "Debian's chromium and chromium-driver are not installed: apt-get install -y --no-install-recommends chromium chromium-driver "
        '(.ci/run installs them)'
    ),
)

# Chromium's own background traffic is refused on a machine with no network; these flags keep it quiet
FLAGS = [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-dev-shm-usage',
    '--window-size=1280,1600',
]


@pytest.fixture(scope='module')
def site(approved):
    "A project with an approved run, a run that failed in validate and a monitor run: `(project, manifests)`"
    project = approved[0]
    assert cli(project, 'run', *batch_without(project)).returncode == 1
    res = cli(project, 'monitor', '--data', 'acs_employment_ma', '-p', 'ingest.years=2018')
    assert res.returncode == 0, res.stdout + res.stderr
    return project, manifests(project)


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f'--user-data-dir={tmp_path_factory.mktemp("chromium-profile")}']:
        opts.add_argument(flag)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)  # Debian's driver: nothing is downloaded
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope='module')
def shots(tmp_path_factory):
    "Where screenshots go: the pytest temporary folder, kept after the run"
    return tmp_path_factory.mktemp('screenshots')


def open_page(driver, url):
    driver.get_log('browser')  # drop what earlier pages logged
    driver.get(url)
    assert driver.execute_script('return document.readyState') == 'complete'


def console_errors(driver):
    return [e for e in driver.get_log('browser') if e['level'] == 'SEVERE']


def screenshot(driver, path):
    height = driver.execute_script('return document.documentElement.scrollHeight')
    driver.set_window_size(1280, min(max(height, 800), 8000))
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    driver.set_window_size(1280, 1600)


def images(driver, scope):
    "`[(figure id or stage section id, loaded, natural width)]` of the images under the CSS selector `scope`"
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' img')].map(i => "
        "[(i.closest('figure') || i.closest('section') || {}).id, i.complete, i.naturalWidth])",
        scope,
    )


def assert_links_resolve(driver):
    "Every link on the page leads somewhere: a file that exists, an id on the page, or a URL the server answers with 200"
    here = urlparse(driver.current_url)
    hrefs = driver.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
    assert hrefs
    for href in hrefs:
        u = urlparse(href)
        if u.scheme == 'file':
            if u.path == here.path:
                assert u.fragment and driver.execute_script(
                    'return !!document.getElementById(arguments[0])', unquote(u.fragment)
                ), href
            else:
                assert Path(unquote(u.path)).exists(), href
        else:
            assert u.scheme == 'http' and u.hostname == '127.0.0.1', f'{href}: the pages link nothing off this machine'
            if u.path == here.path and u.fragment:
                assert driver.execute_script('return !!document.getElementById(arguments[0])', unquote(u.fragment)), (
                    href
                )
            else:
                with urllib.request.urlopen(href.split('#')[0], timeout=10) as r:
                    assert r.status == 200, href
    return hrefs


def assert_dashboard(driver, ms):
    rows = driver.execute_script(
        "return [...document.querySelectorAll('table#runs tr.run')].map(r => "
        '[r.dataset.run, [...r.cells].map(c => c.innerText.trim())])'
    )
    assert [r[0] for r in rows] == [m['run_id'] for m in reversed(ms)], 'a row per run, newest first'
    cells = dict(rows)[ms[0]['run_id']]
    assert (
        cells[1:3] == ['train', 'completed']
        and cells[5] == ms[0]['summary']['data_version']
        and cells[6].startswith('v1')
    )
    assert dict(rows)[ms[1]['run_id']][2] == 'failed'
    monitor = dict(rows)[ms[2]['run_id']]
    assert (
        monitor[1:3] == ['monitor', 'completed']
        and monitor[6].startswith('watched v1')
        and monitor[-2].startswith('by hand')
    ), monitor
    charts = images(driver, 'figure.chart')
    assert sorted(c[0] for c in charts) == ['chart-champion', 'chart-drift', 'chart-key-metric', 'chart-performance']
    assert all(loaded and width >= 600 for _, loaded, width in charts), charts
    champion = driver.find_element('css selector', '#champion').text
    assert champion.startswith('champion: acs-employment version 1'), champion


def test_dashboard_from_the_file_system(site, browser, shots):
    project, ms = site
    open_page(browser, (project / 'runs' / 'index.html').as_uri())
    assert_dashboard(browser, ms)
    assert len(assert_links_resolve(browser)) >= 3
    screenshot(browser, shots / 'dashboard.png')
    assert console_errors(browser) == []


def test_dashboard_runs_table_fits_at_1280_px(site, browser):
    project, _ = site
    open_page(browser, (project / 'runs' / 'index.html').as_uri())
    assert browser.execute_script('return window.innerWidth') <= 1280
    box = browser.execute_script(
        "const b = document.querySelector('table#runs').parentElement; "
        'return [b.scrollWidth, b.clientWidth, b.getBoundingClientRect().right, document.documentElement.clientWidth]'
    )
    assert box[0] <= box[1] and box[2] <= box[3], f'the runs table is cut off on the right: {box}'


def test_dashboard_served_by_ui(site, browser, shots):
    project, ms = site
    proc = subprocess.Popen(
        [*MLOPS_NB, '--settings', str(project / 'settings.ini'), 'ui', '--port', '0'],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line, _ = wait_for(lines_of(proc), 'dashboard  http://127.0.0.1:')
        open_page(browser, line.split()[-1])
        assert_dashboard(browser, ms)
        assert_links_resolve(browser)
        browser.find_element('link text', ms[0]['run_id']).click()
        assert browser.current_url.endswith(f'/{ms[0]["run_id"]}/report.html')
        assert browser.find_element('css selector', '#decision').text.startswith('approved: acs-employment version 1')
        screenshot(browser, shots / 'report-served.png')
        assert console_errors(browser) == [], 'served pages ask for nothing missing (not even /favicon.ico)'
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize('which', ['approved', 'failed', 'monitor'])
def test_report(site, browser, shots, which):
    project, ms = site
    m = {'approved': ms[0], 'failed': ms[1], 'monitor': ms[2]}[which]
    open_page(browser, (project / 'runs' / m['run_id'] / 'report.html').as_uri())
    decision = browser.find_element('css selector', '#decision')
    first_stage = browser.find_element('css selector', 'section.stage')
    assert decision.location['y'] < first_stage.location['y'], 'the decision comes first'
    toc = browser.execute_script(
        "return [...document.querySelectorAll('nav.toc li a')].map(a => a.getAttribute('href'))"
    )
    assert [h for h in toc if h.startswith('#')] == [f'#stage-{r["name"]}' for r in m['stages']]
    if which == 'approved':
        assert (
            decision.text.startswith('approved: acs-employment version 1 became champion')
            and 'approved by tester' in decision.text
        )
        plots = images(browser, 'section.stage .nb')
        assert {p[0] for p in plots} >= {'stage-evaluate', 'stage-audit'}, 'the stage plots are on the page'
        assert all(loaded and width > 100 for _, loaded, width in plots), plots
        assert 'from mlops_nb' not in browser.find_element('tag name', 'body').text, 'inputs are hidden'
        train = browser.find_element('css selector', '#stage-train')
        assert train.find_element('css selector', '.sk-top-container').is_displayed(), (
            "scikit-learn's diagram of the fitted pipeline"
        )
        assert 'Pipeline(steps=' not in train.text, 'not its long text'
    elif which == 'monitor':
        assert decision.text.startswith(('no drift', 'drift')) and 'features drifted' in decision.text
        plots = images(browser, 'section.stage .nb')
        assert len([p for p in plots if p[0] == 'stage-monitor']) >= 4, (
            'drift bars, histograms, windows and control charts'
        )
        assert all(loaded and width > 100 for _, loaded, width in plots), plots
    else:
        assert decision.text.startswith('failed in stage validate') and 'DEYE' in decision.text
        assert 'not run' in browser.find_element('css selector', '#stage-register').text
    assert_links_resolve(browser)
    screenshot(browser, shots / f'report-{which}.png')
    assert console_errors(browser) == []
