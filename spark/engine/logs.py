"""Copy a logger's records into the run directory for the duration of a run."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
