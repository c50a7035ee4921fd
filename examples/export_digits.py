"""Write the built-in digits data as an image folder, to try ``--data imagefolder:PATH`` offline.

Run it with:  python examples/export_digits.py images/
then:         autoshrink search --workload torchvision:resnet18 --data imagefolder:images --image-size 32 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from autoshrink.workloads.vision import export_digits_folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="folder to write (train/, val/, test/, one sub-folder per digit)")
    parser.add_argument("--image-size", type=int, default=32, help="height and width of the PNGs (default: 32)")
    args = parser.parse_args(argv)
    counts = export_digits_folder(args.path, image_size=args.image_size)
    print(f"wrote {sum(counts.values())} images to {args.path} ({counts})")


if __name__ == "__main__":
    main()
