"""Design rule 3: memory stays flat while a large body streams into the blob store.

Measured in a child process (``benchmarks/blob_stream_rss.py``) so that the peak RSS of this
test process, which other tests have already raised, does not hide growth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support.processes import REPO_ROOT, child_env

BENCH = os.path.join(REPO_ROOT, "benchmarks", "blob_stream_rss.py")


class StreamingMemoryTests(SynchronousTestCase):
    def test_streaming_256_mib_grows_rss_by_less_than_64_mib(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        done = subprocess.run(
            [sys.executable, BENCH, "--size", "256MiB", "--data-dir", directory, "--json"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=300,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        result = json.loads(done.stdout)
        self.assertEqual(result["bytes"], 256 * 1024 * 1024)
        self.assertLess(result["rss_growth_mib"], 64, result)
        self.assertGreater(result["producer_pauses"], 0, "the fast peer was never paused")
        self.assertEqual(os.listdir(directory), [], "the benchmark left files behind")
