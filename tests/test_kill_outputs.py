"""SIGKILL at seeded random moments while a process rewrites an output through the atomic
helper and holds its directory's lock: the file left is always a complete earlier version (never
truncated), and the dead writer's lock is taken over by the next run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.lock import LOCK_NAME, output_lock

WRITER = """
import sys
from compress.jsonio import write_json
from compress.lock import output_lock

out = sys.argv[1]
with output_lock(out):
    print("locked", flush=True)
    n = 0
    while True:
        n += 1
        write_json(out + "/result.json", {"n": n, "rows": list(range(20000 + n % 7))})
"""


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_mid_write_leaves_a_complete_file_and_a_stale_lock(tmp_path: Path, seed: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    assert writer.stdout is not None and writer.stdout.readline().strip() == b"locked"
    time.sleep(random.Random(seed).uniform(0.05, 0.6))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    result = tmp_path / "result.json"
    if result.exists():
        payload = json.loads(result.read_text())  # complete JSON, never half a file
        assert payload["rows"] == list(range(20000 + payload["n"] % 7))
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(writer.pid)
    with output_lock(tmp_path):  # the killed writer's lock is stale
        pass
    assert not (tmp_path / LOCK_NAME).exists()
