"""``make demo``'s script, run as make runs it, in a scratch folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def test_demo_downloads_and_says_what_to_try_next(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("done: ") and line.endswith(" 0 failed") for line in lines)
    tail = "\n".join(lines[-6:])
    assert "Try next:" in tail
    assert "minixnat serve --root demo-archive --port 8080" in tail
    assert "(admin / admin)" in tail
    assert "xnat-downloader ls -w http://127.0.0.1:8080 -p DEMO02" in tail
    assert (tmp_path / "demo-archive" / "minixnat.sqlite").is_file()
    assert list((tmp_path / "demo-output" / "DEMO01").iterdir())
