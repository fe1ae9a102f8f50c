"""Drive tools/demo_app.py in headless Chromium (Debian's chromium + chromium-driver).

Shared by tests/test_apis/test_web_demo.py and benchmarks/bench_demo.py; :func:`free_port` serves every
test that starts a server or a process group.
"""
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

PROJECT_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CHROMIUM_NAMES = ('chromium', 'chromium-browser')
DRIVER_NAMES = ('chromedriver', 'chromium-driver')


def find_chromium():
    """(browser, driver) paths, or None when either is not installed."""
    browser = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    driver = next((shutil.which(n) for n in DRIVER_NAMES if shutil.which(n)), None)
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextmanager
def demo_server(args, timeout: float = 180.0):
    """Start ``tools/demo_app.py ARGS`` on 127.0.0.1 and a free port; yield (url, process);
    stop it afterwards. Raises with the server's output if it does not come up."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, osp.join(PROJECT_ROOT, 'tools', 'demo_app.py'), *args,
         '--host', '127.0.0.1', '--port', str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, GRADIO_ANALYTICS_ENABLED='False', OMP_NUM_THREADS='1'))
    lines = []
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise RuntimeError('the demo server exited:\n' + ''.join(lines[-40:]))
            lines.append(line)
            if 'Running on local URL' in line:
                break
        else:
            raise TimeoutError('the demo server did not start:\n' + ''.join(lines[-40:]))
        yield f'http://127.0.0.1:{port}/', process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def chrome(width: int = 1400, height: int = 1800):
    """A headless Chromium WebDriver on the system's browser and driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                f'--window-size={width},{height}'):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


class DemoPage:
    """The demo page's controls, by the element ids the app sets."""

    def __init__(self, driver, url: str, timeout: float = 60.0):
        from selenium.webdriver.support.ui import WebDriverWait
        self.driver = driver
        self.wait = WebDriverWait(driver, timeout, poll_frequency=0.02)
        driver.get(url)
        self.wait.until(lambda d: self._all('#ssn-browser button.thumbnail-item')
                        or self.message())

    def _all(self, css):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def _one(self, css):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def message(self) -> str:
        found = self._all('#ssn-message')
        return found[0].text if found else ''

    def reference_name(self) -> str:
        return self._one('#ssn-reference-name').text

    def browser_names(self):
        return [e.text for e in self._all('#ssn-browser .caption-label')]

    def pick_from_gallery(self, index: int) -> None:
        name = self.browser_names()[index]
        self._all('#ssn-browser button.thumbnail-item')[index].click()
        self.wait.until(lambda d: self.reference_name().endswith(name))

    def pick_result(self, index: int) -> str:
        name = self.result_names()[index]
        self._all('#ssn-results button.thumbnail-item')[index].click()
        self.wait.until(lambda d: self.reference_name().endswith(name))
        return name

    def type_text(self, text: str) -> None:
        box = self._one('#ssn-text textarea')
        box.clear()
        if text:
            box.send_keys(text)

    def result_names(self):
        return [e.text for e in self._all('#ssn-results-table td.ssn-name')]

    def result_scores(self):
        return [float(e.text) for e in
                self._all('#ssn-results-table tr td:nth-child(3)')]

    def history(self):
        return [e.text for e in self._all('#ssn-history li')]

    def search(self) -> float:
        """Click Search and wait until the page shows the answer: a new result table and no
        message (one left by an earlier bad input can be cleared a moment after the table
        changes); the seconds taken. A search that ends in a message times out here."""
        before = self._one('#ssn-results-box').text
        start = time.perf_counter()
        self._one('#ssn-search').click()
        self.wait.until(lambda d: self._one('#ssn-results-box').text != before
                        and not self.message())
        return time.perf_counter() - start

    def search_expecting_message(self) -> str:
        """Click Search where the page must answer with a message (none shown before)."""
        assert not self.message(), f'a message is already shown: {self.message()!r}'
        self._one('#ssn-search').click()
        self.wait.until(lambda d: self.message())
        return self.message()

    def upload(self, path: str) -> None:
        self._one('#ssn-upload input[type=file]').send_keys(path)
