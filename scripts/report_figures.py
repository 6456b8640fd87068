"""Screenshots of a run's HTML report for the docs, taken by the headless Chromium the tests use.

    .venv/bin/python scripts/report_figures.py WORKSPACE [RUN] --out docs/report.png [--section overoptimization]

Writes the report to a temporary file, opens it in Debian's chromium (tests/browser.py: no network), fails if
the page logged a console error or requested anything but itself, and saves a PNG of the page top or of the
section with the given id.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from alignpipe.report import write_report  # noqa: E402
from browser import launch  # noqa: E402 — the tests' browser helper, on the path just above


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace")
    ap.add_argument("run", nargs="?")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--section", help="id of the element to scroll to (default: the page top)")
    ap.add_argument("--size", default="1280x1000", help="window WxH")
    args = ap.parse_args(argv)
    width, height = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        page = write_report(args.workspace, args.run, Path(tmp) / "report.html")
        browser = launch(str(Path(tmp) / "profile"))
        try:
            browser.set_window_size(width, height)
            browser.get(page.as_uri())
            errors, requests = browser.console_errors(), browser.requests()
            if errors or requests != [page.as_uri()]:
                print(f"console errors {errors}, requests {requests}", file=sys.stderr)
                return 1
            if args.section:
                browser.execute_script("arguments[0].scrollIntoView()", browser.find_element("id", args.section))
            browser.screenshot(args.out)
        finally:
            browser.driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
