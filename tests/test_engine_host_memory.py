"""The training processes reuse freed host memory instead of faulting in fresh pages every step."""
import json
import platform
import subprocess
import sys

import pytest

from spark.engine import distributed

PAGES = 2**26 // 4096  # a 64 MiB block in 4 KiB pages

# In a child process: mallopt changes the whole process. Transparent huge pages are turned off there, so that a
# fresh block costs one fault per 4 KiB page whatever the machine's THP setting.
_FAULTS_PER_BLOCK = """
import ctypes, json, resource, statistics
import torch
from spark.engine.distributed import retain_freed_memory

ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE

def faults_per_block(warmup=6, repeats=9):
    # the median: the heap still grows over the first few blocks (other allocations land in a freed one)
    counts = []
    for _ in range(warmup + repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(2**24).fill_(1.0)  # float32: 64 MiB
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(counts[warmup:])

print(json.dumps([faults_per_block(), retain_freed_memory(), faults_per_block()]))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    result = subprocess.run([sys.executable, "-c", _FAULTS_PER_BLOCK], capture_output=True, text=True, check=True)
    default, applied, retained = json.loads(result.stdout)
    assert applied is True
    assert default >= 0.9 * PAGES  # glibc's default: each 64 MiB block is a fresh mapping
    assert retained <= 0.01 * PAGES  # the freed block's pages serve the next one


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert distributed.retain_freed_memory() is False
