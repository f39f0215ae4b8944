"""The k-NN monitor's cost: seconds per evaluation (features of every train and val image, then the vote).

What the pretraining run adds every ``knn_every`` epochs (:class:`spark.pretrain.knn.KnnMonitor`), on the prepared
classification data, with the run's precision (``auto``: bf16 where the device has it natively) and loader. The
first round includes starting the loader workers (they persist for the run); the median is over the others.

    spark prepare --params params.yaml data.root=/tmp/knn-data        # the mini benchmark, if not there yet
    python bench/pretrain_knn.py --data /tmp/knn-data/mini-in          # resnet18, 64 px: the mini preset
    python bench/pretrain_knn.py --data /datasets/imagenet --arch resnet50 --input-size 224 --batch 256 \\
        --train-images 20000 --val-images 10000 --workers 10               # the paper preset's subsets, on a GPU
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from spark.engine import DistEnv, Precision
from spark.model import build_spark
from spark.pretrain import PretrainConfig
from spark.pretrain.knn import KnnMonitor
from spark.provenance import hardware


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="an ImageFolder root with train/ and val/")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass (the run: global_batch)")
    parser.add_argument("--train-images", type=int, help="knn_train_images (default: all)")
    parser.add_argument("--val-images", type=int, help="knn_val_images (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="loader workers (the run: num_workers)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = PretrainConfig(data="unused", arch=args.arch, input_size=args.input_size, global_batch=args.batch,
                            decoder_width=128, num_workers=args.workers, precision=args.precision, channels_last=True,
                            knn_data=args.data, knn_train_images=args.train_images, knn_val_images=args.val_images)
    env = DistEnv(device=device)
    precision = Precision.resolve(config.precision, config.channels_last, device)
    monitor = KnnMonitor(config, env, precision)
    model = precision.prepare_model(build_spark(config.model_config()).to(device))
    print(f"{hardware()}; torch {torch.__version__}, {args.threads} thread(s), {args.workers} loader worker(s); "
          f"precision {precision.describe()}")
    print(f"{args.arch} {args.input_size} px, batch {args.batch}; {monitor.describe()}")
    seconds = []
    for round_ in range(args.rounds):
        start = time.perf_counter()
        top1 = monitor.top1(model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        print(f"round {round_ + 1}: {seconds[-1]:.2f} s (top-1 {top1:.2f} %)")
    rest = seconds[1:] or seconds
    print(f"per evaluation: median {statistics.median(rest):.2f} s (range {min(rest):.2f}-{max(rest):.2f}); "
          f"first, starting the workers: {seconds[0]:.2f} s")


if __name__ == "__main__":
    main()
