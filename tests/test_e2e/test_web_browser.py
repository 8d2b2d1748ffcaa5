"""Real-browser check of demo/web_demo.py (``make test-web``).

Starts the demo as a subprocess on 127.0.0.1, drives headless Chromium
(Debian's ``chromium`` + ``chromium-driver``) with Selenium: uploads the
built-in 16-bit 4-band GeoTIFF, types the bands and the expression, presses
Segment, waits for the overlay and the georeferenced downloads, saves a
screenshot, then checks that an empty expression gives a message in the page.
Every request the page makes must go to the demo itself (other hosts are
unresolvable in this browser and any attempt fails the test).

Checkpoint: ``$WEB_DEMO_CHECKPOINT``, else the one ``make demo`` leaves
(``work_dirs/demo/last_checkpoint``), else a random-initialised tiny model.
Screenshot: ``work_dirs/test_web/web_demo.png`` (``$WEB_DEMO_SCREENSHOT``).
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, TINY_CONFIG, free_port

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
TIMEOUT = 120


def checkpoint(tmp_path: Path) -> str:
    """The checkpoint to serve (see the module docstring)."""
    if os.environ.get('WEB_DEMO_CHECKPOINT'):
        return os.environ['WEB_DEMO_CHECKPOINT']
    last = REPO / 'work_dirs' / 'demo' / 'last_checkpoint'
    if last.is_file():
        ckpt = REPO / 'work_dirs' / 'demo' / Path(
            last.read_text().strip()).name
        if ckpt.is_file():
            return str(ckpt)
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import rsrefseg_mm  # noqa: F401
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(TINY_CONFIG).model)
    path = tmp_path / 'tiny_random.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    for tool, pkg in ((CHROMIUM, 'chromium'), (CHROMEDRIVER,
                                               'chromium-driver')):
        if not os.path.exists(tool):
            pytest.fail(f'{tool} not found: apt-get install -y {pkg}')
    work = tmp_path_factory.mktemp('webdemo')
    ckpt = checkpoint(work)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    log = open(work / 'server.log', 'w')
    proc = subprocess.Popen([
        sys.executable, 'demo/web_demo.py', TINY_CONFIG, ckpt, '--port',
        str(port), '--work-dir',
        str(work)
    ],
                            cwd=REPO,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}/'
    deadline = time.time() + TIMEOUT
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log.close()
                pytest.fail('the web demo did not start:\n' +
                            (work / 'server.log').read_text()[-3000:])
            time.sleep(1)
    print(f'\nweb demo at {url} with checkpoint {ckpt}')
    yield url, work
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault('SE_AVOID_STATS', 'true')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu',
                 '--disable-quic', '--no-first-run',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage', '--window-size=1400,1700',
                 '--host-resolver-rules=MAP * ~NOTFOUND , '
                 'EXCLUDE 127.0.0.1',
                 '--user-data-dir=' + str(tmp_path_factory.mktemp('chr'))):
        opts.add_argument(flag)
    opts.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def requested_urls(driver) -> list:
    urls = []
    for entry in driver.get_log('performance'):
        msg = json.loads(entry['message'])['message']
        if msg.get('method') == 'Network.requestWillBeSent':
            urls.append(msg['params']['request']['url'])
    return urls


def wait_for(driver, condition, what: str, timeout: float = TIMEOUT):
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, timeout).until(condition)
    except Exception:
        shot = Path(
            os.environ.get('WEB_DEMO_SCREENSHOT',
                           REPO / 'work_dirs' / 'test_web' / 'web_demo.png'))
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot.with_name('failure.png')))
        pytest.fail(f'timed out waiting for {what}; screenshot '
                    f'{shot.with_name("failure.png")}')


def test_upload_type_segment_screenshot(server, browser):
    from selenium.webdriver.common.by import By
    url, work = server
    driver = browser
    driver.get(url)
    wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR,
                                          '#image-file input[type=file]'),
        'the upload field')
    examples = [
        json.loads(line) for line in open(work / 'examples' / 'examples.jsonl')
    ]
    tif, text = examples[-1]['image'], examples[-1]['text']
    assert tif.endswith('scene_16bit_4band.tif')
    driver.find_element(By.CSS_SELECTOR,
                        '#image-file input[type=file]').send_keys(str(tif))
    bands = driver.find_element(By.CSS_SELECTOR, '#bands textarea, '
                                '#bands input')
    bands.send_keys('3 2 1')
    expression = driver.find_element(
        By.CSS_SELECTOR, '#expression textarea,'
        ' #expression input')
    expression.send_keys(text)
    # the preview shows the stretched GeoTIFF once bands are given
    bands.send_keys('\n')
    driver.find_element(By.CSS_SELECTOR, '#segment').click()
    wait_for(driver,
             lambda d: d.find_elements(By.CSS_SELECTOR, '#overlay img[src]'),
             'the overlay image')
    wait_for(
        driver, lambda d: 'predicted as the target' in d.find_element(
            By.CSS_SELECTOR, '#status').text, 'the status line')
    status = driver.find_element(By.CSS_SELECTOR, '#status').text
    assert 'stretched 2-98 %' in status and 'EPSG:32633' in status
    downloads = driver.find_element(By.CSS_SELECTOR,
                                    '#download').text.replace('\n', '')
    assert 'scene_16bit_4band_mask.tif' in downloads
    assert 'scene_16bit_4band_mask.geojson' in downloads
    img = driver.find_element(By.CSS_SELECTOR, '#overlay img')
    assert driver.execute_script(
        'return arguments[0].complete && arguments[0].naturalWidth', img) \
        >= 256
    shot = Path(
        os.environ.get('WEB_DEMO_SCREENSHOT',
                       REPO / 'work_dirs' / 'test_web' / 'web_demo.png'))
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shot))
    print(f'screenshot: {shot}')

    # an empty expression: a message in the page, no stack trace
    expression.clear()
    expression.send_keys('&nbsp;')
    driver.find_element(By.CSS_SELECTOR, '#segment').click()
    wait_for(
        driver, lambda d: 'expression is empty' in d.find_element(
            By.TAG_NAME, 'body').text, 'the error message')
    body = driver.find_element(By.TAG_NAME, 'body').text
    assert 'Traceback' not in body
    assert "('&nbsp;' -> '')" in body  # shown as typed, not as HTML
    driver.save_screenshot(str(shot.with_name('web_demo_error.png')))

    # network requests (the browser's own chrome:// pages aside) all go to
    # the demo
    web = [
        u for u in requested_urls(driver)
        if u.startswith(('http:', 'https:', 'ws:', 'wss:'))
    ]
    assert any(u.startswith(url) for u in web)
    host = url.split('//')[1].rstrip('/')
    external = [u for u in web if u.split('//')[1].split('/')[0] != host]
    assert external == [], f'the page requested {external}'
