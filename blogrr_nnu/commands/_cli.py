"""What every command shares: its parser's opening, the -np option, logging, the device, the one-line error.

Every command prints a usage or input error as one line ``<command>: <what is wrong and the fix>`` on stderr and
exits with 2 (:func:`fail`); argparse's own errors (an unknown option, ``-np 0``) exit with 2 as well.
"""
from __future__ import annotations

import argparse
import logging
import sys

LOG_FORMAT = "%(levelname)s %(message)s"


def command_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The command's parser: ``epilog`` (the examples) printed as written."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_processes(parser: argparse.ArgumentParser, default: int | None, what: str = "worker processes",
                  flags: tuple[str, ...] = ("-np", "--num_processes")) -> None:
    """The ``-np`` option (>= 1, checked by argparse)."""
    parser.add_argument(*flags, type=positive_int, default=default,
                        help=f"{what} (default: up to 2)" if default is None else f"{what} (default {default})")


def start_logging(verbose: bool = False, level: int = logging.WARNING, fmt: str = LOG_FORMAT) -> None:
    """Log at INFO with ``-v`` (or when ``level`` says so), else at ``level``."""
    logging.basicConfig(level=logging.INFO if verbose else level, format=fmt)


def fail(prog: str, message: str) -> int:
    """Print ``prog: message`` on stderr; returns the usage-error exit status 2."""
    print(f"{prog}: {message}", file=sys.stderr)
    return 2


def resolve_device(requested: str | None) -> str:
    """``-device``: what was asked for, else cuda when a CUDA GPU is there, else cpu.

    Raises:
        ValueError: cuda asked for without a CUDA GPU (the message names the fix).
    """
    import torch

    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda asked for, but no CUDA GPU is available (use -device cpu)")
    return device
