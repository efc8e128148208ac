"""What the examples' command lines share: argument types that refuse out-of-range values with
argparse's usage message (not a traceback from deep inside), and the check that --plot's
directory exists before the training runs."""

import argparse
import math
import os


def at_least(minimum: int):
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
        return value
    parse.__name__ = "integer"
    return parse


def positive(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def check_plot_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Unless --no-plot, --plot's directory must exist (found out before training, not at
    the end of it)."""
    if not args.no_plot:
        directory = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(directory):
            parser.error(f"--plot {args.plot}: the directory {directory} does not exist")
