"""Building the documentation site for the tests (tests/test_docs_site.py,
tests/test_docs_browser.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def build_site(out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the repository's site (mkdocs.yml) into ``out``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
