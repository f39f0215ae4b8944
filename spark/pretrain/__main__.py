"""``python -m spark.pretrain ARGS`` is ``spark pretrain ARGS`` (handy under ``torchrun -m``)."""
import sys

from spark.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
