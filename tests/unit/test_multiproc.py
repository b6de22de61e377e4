"""prometheus-client's multiprocess mode is set up only before the client is imported
(service/observability/multiproc.py); each case runs in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_prepare_empties_the_folder_and_switches_the_client_to_files(tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"stale")
    (tmp_path / "keep.txt").write_text("not ours")
    out = _python(f"""
from service.observability import multiproc
print(multiproc.prepare({str(tmp_path)!r}))
from service.observability import metrics
metrics.observe_request("read", "Patient", 200, 0.01)
import json, os
print(json.dumps(sorted(os.listdir({str(tmp_path)!r}))))
print(b"toh_http_requests_total" in metrics.exposition())
""")
    folder, listing, exposed = out.splitlines()
    files = json.loads(listing)
    assert folder == str(tmp_path)
    assert "counter_1.db" not in files and "keep.txt" in files and any(f.startswith("counter_") for f in files)
    assert exposed == "True"


def test_prepare_does_nothing_once_the_client_is_imported(tmp_path: Path) -> None:
    out = _python(f"""
import os
from service.observability import metrics
from service.observability import multiproc
print(multiproc.prepare({str(tmp_path)!r}), os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
""")
    assert out == "None None"
