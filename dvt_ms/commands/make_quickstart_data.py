"""Write the synthetic shapes ImageFolder used by the quickstart (train/ and val/ splits, PNG files).

    python scripts/make_quickstart_data.py --output data/quickstart [--num_classes 4]
        [--train_per_class 150] [--val_per_class 40] [--image_size 96] [--seed 0]

Half the images of every class are easy (a large, high-contrast shape on a flat background) and half
are hard (a small, faint shape among noise and clutter); OUTPUT/manifest.json says which. A complete
folder made with the same options is left as it is, so the command can be repeated freely.
"""
import argparse
import logging
from pathlib import Path

from dvt_ms.data.synthetic import make_shapes_dataset
from dvt_ms.utils.cli import run_cli, setup_logging

logger = logging.getLogger("make_quickstart_data")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("data/quickstart"),
                        help="folder to write (default: data/quickstart)")
    parser.add_argument("--num_classes", type=int, default=4, help="number of shape classes (2-7, default 4)")
    parser.add_argument("--train_per_class", type=int, default=150, help="training images per class")
    parser.add_argument("--val_per_class", type=int, default=40, help="validation images per class")
    parser.add_argument("--image_size", type=int, default=96, help="side of the square images in pixels")
    parser.add_argument("--hard_fraction", type=float, default=0.5, help="share of hard images per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT even if it holds other data or was made with other options")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    data = make_shapes_dataset(args.output, num_classes=args.num_classes, train_per_class=args.train_per_class,
                               val_per_class=args.val_per_class, image_size=args.image_size,
                               hard_fraction=args.hard_fraction, seed=args.seed, overwrite=args.overwrite)
    counts = data.manifest["counts"]
    logger.info("%s %s: classes %s; %s", "wrote" if data.created else "kept", data.root,
                ", ".join(data.classes),
                "; ".join(f"{split} {c['easy']} easy + {c['hard']} hard" for split, c in counts.items()))
    return 0


if __name__ == "__main__":
    run_cli(main)
