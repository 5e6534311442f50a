"""The documentation site builds with ``--strict`` and renders in a real browser (headless Chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from check_docs_site import CHROMEDRIVER, CHROMIUM, PAGES, check_site  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
                   cwd=ROOT, check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return folder


def test_every_api_page_documents_its_modules(site: Path) -> None:
    """The API reference covers the library's floors, each page with the objects its modules define."""
    for page, names in {"backbone": ["MobileNetV2", "BackboneSettings"], "heads": ["AnchorSettings", "SSDLoss"],
                        "models": ["SSDLite", "DeepLabV3"], "datasets": ["COCODetection"],
                        "tasks": ["DetectionTask", "JointTask", "DetectionEvaluator"],
                        "deploy": ["NetworkBackend", "ExportedBackend", "DeployedModel"],
                        "pictures": ["draw_detections", "overlay_mask"]}.items():
        html = (site / "reference" / page / "index.html").read_text()
        missing = [name for name in names if 'id="mobilenetv2_dense.' not in html or name not in html]
        assert not missing, f"reference/{page}: {missing}"


@pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_pages_render_with_navigation_and_search(site: Path) -> None:
    reports = check_site(site)
    assert [r.page for r in reports] == [page for page, _, _ in PAGES]
    for report in reports:
        assert not report.problems, report.line()
