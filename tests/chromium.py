"""Open a page in headless Chromium (Debian's `chromium`) and report what a person sees.

The page is loaded in an iframe of a harness page whose script, after the load event,
counts the page's images that decoded (`complete` and a natural width) and writes the
result into its own DOM, which `--dump-dom` prints.  A screenshot is taken separately.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HARNESS = """<!doctype html><html><body>
<iframe id="page" src="{src}" style="width:1400px;height:3000px"></iframe>
<pre id="result">pending</pre>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument;
  var images = Array.from(doc.images);
  var broken = images.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }});
  document.getElementById("result").textContent = JSON.stringify({{
    images: images.length,
    broken: broken.map(function (i) {{ return i.getAttribute("src"); }}),
    text_chars: doc.body.innerText.length,
    cards: doc.querySelectorAll("section.card").length,
    title: doc.title
  }});
}});
</script></body></html>
"""


def chromium() -> str:
    """The browser's path; skips the test where it is missing, except in CI
    (FACEXT_REQUIRE_CHROMIUM=1, set by .ci/run), where a missing browser fails."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("FACEXT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return path


def _run(args: list[str], timeout: float = 120) -> str:
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--allow-file-access-from-files"]
    done = subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def page_check(page: Path) -> dict:
    """Images, broken images, visible text and cards of `page`, after it loaded."""
    harness = page.parent / f"_harness_{page.stem}.html"
    harness.write_text(HARNESS.format(src=page.name))
    dom = _run(["--virtual-time-budget=20000", "--dump-dom", harness.resolve().as_uri()])
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL)
    if match is None or match.group(1) == "pending":
        raise RuntimeError(f"the harness did not report (page never loaded?): {dom[-500:]}")
    import html

    return json.loads(html.unescape(match.group(1)))


def screenshot(page: Path, target: Path, width: int = 1400, height: int = 4000) -> Path:
    _run([f"--window-size={width},{height}", f"--screenshot={target}", "--virtual-time-budget=20000",
          page.resolve().as_uri()])
    return target
