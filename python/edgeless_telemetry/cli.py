"""The ``edgeless-telemetry`` console script.

Each module in ``edgeless_telemetry.commands`` adds its subcommands through
``register(subparsers)``; this file only assembles them.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__, commands

DEBUG_ENV = "EDGELESS_TELEMETRY_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeless-telemetry",
        description="Telemetry for EDGELESS nodes and control plane.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def describe(error: BaseException) -> str:
    """One line saying what went wrong, naming the value involved.

    Our own errors already name it (``ValueError: metrics_url must look like
    http://host:port, got 'foo'``); OS errors get their path or, for a busy
    port, what to do.
    """
    if isinstance(error, OSError) and error.filename is not None:
        what = f"{error.strerror or error}: {error.filename}"
    elif isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        what = f"{error} (another process listens there: pick another port or stop it)"
    else:
        what = str(error) or type(error).__name__
    if type(error).__module__.startswith("redis"):
        what = f"Redis: {what}"
    return " ".join(what.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the one place a user mistake becomes one line
        if debug:
            raise
        print(f"edgeless-telemetry {args.command}: error: {describe(error)}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
