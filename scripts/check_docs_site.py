"""The built documentation site, looked at in headless Chromium: each page renders its content with the navigation,
and the search box finds pages.

    make docs && python scripts/check_docs_site.py                      # the home, one task and one API page
    python scripts/check_docs_site.py --screenshots runs/docs_pictures  # and a PNG of each, to look at

Serves ``site/`` on a free localhost port and drives Debian's Chromium through its ChromeDriver (packages
``chromium`` and ``chromium-driver``) with Selenium. Per page it checks the title, the page heading, the number of
navigation links, and that typing a word into the search box lists matching pages. Prints one line per page and
exits 1 naming what is missing.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium's own network services find a closed network here; these flags keep it from trying.
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,900")
# (page, its heading, a word the search must find pages for)
PAGES = (("index.html", "mobilenetv2-dense", "detection"),
         ("detection/index.html", "Detection", "anchors"),
         ("reference/backbone/index.html", "Backbone", "width"))
PAGE_WAIT_S = 30  # for a page's header, and again for search results: generous, for a machine running other tests


@dataclass
class PageReport:
    page: str
    title: str
    heading: str
    nav_links: int
    search_results: int
    problems: list[str]

    def line(self) -> str:
        status = "ok" if not self.problems else "; ".join(self.problems)
        return (f"{self.page}: title {self.title!r}, heading {self.heading!r}, {self.nav_links} navigation links, "
                f"{self.search_results} search results: {status}")


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on a free localhost port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


def browser():  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def check_page(driver, url: str, page: str, heading: str, word: str, screenshots: Path | None) -> PageReport:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + page)
    # Waited for, not looked up once: on a loaded machine Chromium can hand the page back before its body is parsed
    # (a CI run saw the right title and no header yet).
    try:
        WebDriverWait(driver, PAGE_WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete"
                                                 and d.find_elements(By.ID, "__search"))
    except Exception:  # noqa: BLE001 (selenium's TimeoutException): not a page of the site (a 404, another theme)
        return PageReport(page, driver.title, "", 0, 0, [f"{page} is not a page of the built site (no search toggle "
                                                         f"after {PAGE_WAIT_S} s)"])
    problems = []
    title = driver.title
    headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "article h1")]
    if heading not in headings:
        problems.append(f"no heading {heading!r} (found {headings})")
    nav_links = len(driver.find_elements(By.CSS_SELECTOR, "nav.md-nav--primary .md-nav__link"))
    if nav_links < 5:
        problems.append(f"{nav_links} navigation links")
    driver.execute_script("document.getElementById('__search').checked = true")  # what the search icon does
    driver.find_element(By.CSS_SELECTOR, "input.md-search__input").send_keys(word)
    try:
        WebDriverWait(driver, PAGE_WAIT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
    except Exception:  # noqa: BLE001 (selenium's TimeoutException: reported as a problem below)
        pass
    results = len(driver.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
    if results == 0:
        problems.append(f"searching {word!r} lists no page")
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshots / (page.replace("/", "_").removesuffix(".html") + ".png")))
    return PageReport(page, title, heading if heading in headings else "", nav_links, results, problems)


def check_site(site: Path, pages=PAGES, screenshots: Path | None = None) -> list[PageReport]:
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"check_site: {site}/index.html is missing; build the site first with make docs")
    driver = browser()
    try:
        with serve(site) as url:
            return [check_page(driver, url, page, heading, word, screenshots) for page, heading, word in pages]
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", type=Path, default=Path("site"), help="the built site (make docs writes site/)")
    parser.add_argument("--screenshots", type=Path, help="folder to write a PNG of each page into")
    args = parser.parse_args(argv)
    reports = check_site(args.site, screenshots=args.screenshots)
    for report in reports:
        print(report.line())
    return 1 if any(report.problems for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
