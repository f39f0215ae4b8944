"""``python stop_after_first_checkpoint.py MARKER ARGS...``: ``python -m eval.cli ARGS...``, except that once the
run's first checkpoint is written it creates MARKER and stops itself (SIGSTOP) until it is killed. A test can then
kill it at a known point, between its first checkpoint and its results, however busy the machine is."""
import os
import signal
import sys
from pathlib import Path

import spark.engine.run as run_module
from eval.cli import main

save = run_module.EpochTrainer.save


def save_then_stop(self: run_module.EpochTrainer, epoch: int) -> None:
    save(self, epoch)
    Path(sys.argv[1]).touch()
    os.kill(os.getpid(), signal.SIGSTOP)


run_module.EpochTrainer.save = save_then_stop
sys.exit(main(sys.argv[2:]))
