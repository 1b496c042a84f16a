#!/usr/bin/env python3
"""Drives the strata web console in headless Chromium (Debian's chromium and
chromium-driver, selenium from python3-selenium): login refused and
accepted, a triggered run on the dashboard with its snapshot id, the charts,
browsing to a file and downloading it, restoring a directory.

Environment: CONSOLE_URL, CONSOLE_TOKEN, SOURCE_DIR (the backed-up
directory), FILE_REL (a file below it), DIR_REL (a directory below it),
RESTORE_TARGET, DOWNLOAD_DIR, SHOTS (screenshot directory). Prints
`SNAPSHOT <short id>`; exits non-zero on any failure."""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

URL = os.environ["CONSOLE_URL"].rstrip("/")
TOKEN = os.environ["CONSOLE_TOKEN"]
SOURCE = os.environ["SOURCE_DIR"]
FILE_REL = os.environ["FILE_REL"]
DIR_REL = os.environ["DIR_REL"]
TARGET = os.environ["RESTORE_TARGET"]
DOWNLOADS = os.environ["DOWNLOAD_DIR"]
SHOTS = os.environ["SHOTS"]


def wait_for(what, cond, timeout=90, reload=None):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = cond()
            if v:
                return v
        except Exception:  # the page may be changing under us
            pass
        if reload:
            reload()
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def shot(d, name):
    os.makedirs(SHOTS, exist_ok=True)
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def main():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000"]:
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": DOWNLOADS,
                                           "download.prompt_for_download": False})
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    try:
        d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
        # Refused without the token: the dashboard sends us to the login form.
        d.get(URL + "/")
        assert d.current_url.endswith("/login"), d.current_url
        shot(d, "login")
        d.find_element(By.ID, "token").send_keys("not-the-token")
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        # The answer is a new page: wait for it (a wrong token accepted
        # would show the dashboard instead, and this times out).
        wait_for("the wrong token to be refused", lambda: "Wrong token" in d.page_source, timeout=30)
        assert d.current_url.endswith("/login"), d.current_url
        assert "Dashboard" not in d.title, "a wrong token was accepted"
        # Logged in with the token.
        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait_for("the dashboard", lambda: d.find_element(By.TAG_NAME, "h1").text == "Dashboard")
        # Run the job now; its latest snapshot appears in its row.
        d.find_element(By.CSS_SELECTOR, "tr[data-job=vol] button").click()
        wait_for("the started notice", lambda: "Job vol started" in d.page_source)
        link = wait_for(
            "the job's snapshot link",
            lambda: d.find_element(By.CSS_SELECTOR, "tr[data-job=vol] a.snapshot-link"),
            reload=lambda: d.get(URL + "/"),
        )
        row = d.find_element(By.CSS_SELECTOR, "tr[data-job=vol]").text
        assert " ok" in " " + row, row
        short = link.text.strip()
        print("SNAPSHOT", short, flush=True)
        charts = d.find_elements(By.CSS_SELECTOR, "figure.chart svg")
        assert len(charts) >= 4, f"{len(charts)} charts"
        assert d.find_elements(By.CSS_SELECTOR, "figure.chart polyline"), "no chart has data"
        shot(d, "dashboard")
        d.set_window_size(390, 900)
        shot(d, "dashboard-phone")
        d.set_window_size(1280, 1000)
        # Browse from the root to the file, one link per directory.
        link.click()
        parts = [p for p in SOURCE.split("/") if p] + FILE_REL.split("/")
        for p in parts:
            name = p
            links = d.find_elements(By.CSS_SELECTOR, "#entries a")
            target = [a for a in links if a.text.rstrip("/") == name]
            assert target, f"no entry {name} in {[a.text for a in links]}"
            target[0].click()
        meta = d.find_element(By.ID, "meta").text
        assert "file" in meta, meta
        shot(d, "browse-file")
        d.find_element(By.ID, "download").click()
        fname = os.path.basename(FILE_REL)
        out = os.path.join(DOWNLOADS, fname)
        wait_for("the download", lambda: os.path.exists(out) and not os.path.exists(out + ".crdownload")
                 and os.path.getsize(out) == os.path.getsize(os.path.join(SOURCE, FILE_REL)))
        with open(out, "rb") as a, open(os.path.join(SOURCE, FILE_REL), "rb") as b:
            assert a.read() == b.read(), "downloaded bytes differ"
        # Restore a directory, after the confirmation, and watch it finish.
        d.get(f"{URL}/snapshots/{short}/browse?path=" + os.path.join(SOURCE, DIR_REL))
        shot(d, "browse-dir")
        t = d.find_element(By.ID, "target")
        t.clear()
        t.send_keys(TARGET)
        d.find_element(By.ID, "restore").click()
        wait_for("the confirmation page", lambda: "Confirm restore" in d.find_element(By.TAG_NAME, "h1").text, timeout=30)
        shot(d, "restore-confirm")
        d.find_element(By.ID, "confirm").click()
        wait_for("the restore to finish", lambda: d.find_element(By.ID, "restore-state").text == "done")
        shot(d, "restore-done")
        # The snapshot list and its filters.
        d.get(URL + "/snapshots")
        assert d.find_elements(By.CSS_SELECTOR, "#snapshots tbody tr"), "no snapshots listed"
        shot(d, "snapshots")
        d.get(URL + "/")
        shot(d, "dashboard-after-restore")
    finally:
        d.quit()


if __name__ == "__main__":
    main()
    print("OK", flush=True)
