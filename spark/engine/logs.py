"""Logging of a run: the console (rank 0 only) and a copy of the records in the run directory."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    """Console logging at INFO on rank 0 and WARNING elsewhere: under torchrun, one process reports progress."""
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=LOG_FORMAT)


@contextmanager
def log_to_file(logger: logging.Logger, path: str | Path) -> Iterator[None]:
    """Append ``logger``'s records (INFO and up) to ``path`` inside the block; a resumed run appends."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(previous_level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()
