"""The ``nengo-onnx`` command."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nengo-onnx", description=__doc__)
    parser.add_argument("--version", action="store_true")
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__  # noqa: PLC0415

        print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
