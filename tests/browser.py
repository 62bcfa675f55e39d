"""Test helpers: start the demo server in a subprocess on a free loopback port, and drive Debian's headless
Chromium through selenium and /usr/bin/chromedriver. Nothing here downloads a browser or a driver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")
SERVER_START_TIMEOUT = 120  # seconds: imports of torch/transformers/gradio on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_available() -> str | None:
    """None when headless Chromium can be driven here, else why not."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@contextmanager
def demo_server(args: list[str], log_path: Path):
    """Run `rewis demo --port P ARGS` in a subprocess; yield (url, process); always stop it."""
    port = free_port()
    tmp = Path(log_path).parent / "server_tmp"  # the server's temp folders (sessions, uploads) land here
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    cmd = [sys.executable, "-m", "apps.cli", "demo", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_http(url, proc, log_path)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def session_folders(log_path: Path) -> list[Path]:
    """The per-session folders of a server started by demo_server with this log path."""
    return sorted(p for root in (Path(log_path).parent / "server_tmp").glob("rewis-demo-*") for p in root.iterdir())


def wait_for_http(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"demo server exited with {proc.returncode}:\n{Path(log_path).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"demo server did not answer at {url} within {SERVER_START_TIMEOUT} s:\n"
                       f"{Path(log_path).read_text()[-3000:]}")


@contextmanager
def chromium():
    """A selenium WebDriver on headless Debian Chromium with a new empty profile; always quit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager would try to fetch drivers from the network; with explicit paths it is never needed.
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tempfile.mkdtemp(prefix="rewis-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(driver, condition, timeout: float, what: str):
    """WebDriverWait with a message that says what never happened."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, message=f"timed out: {what}")


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def click_tab(driver, title: str, timeout: float = 20) -> None:
    from selenium.webdriver.common.by import By

    xpath = f"//button[@role='tab' and contains(normalize-space(.), '{title}')]"
    button = wait_until(driver, lambda d: d.find_elements(By.XPATH, xpath), timeout, f"tab '{title}'")[0]
    button.click()


def screenshot(driver, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
