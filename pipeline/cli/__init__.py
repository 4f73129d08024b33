"""The ``ichct`` command line: a thin layer over the pipeline's Python functions.

Exit codes:

- 0: success;
- 1: data error: bad input or a failed check (an :class:`ichct.errors.IchctError`, a file or
  folder that is missing, of the wrong type or not permitted, or a full disk; see
  :func:`ichct.errors.data_error`); its message names the file and what is wrong, without a
  traceback (``-v`` adds it);
- 2: usage error (a wrong or missing argument);
- 70: internal error, a bug in ichct or a library it calls (``EX_SOFTWARE`` of ``sysexits.h``):
  the full traceback, then a line asking to report it;
- 130: interrupted (Ctrl-C).

Each subcommand lives in its own module exposing ``register(subparsers)``; the module's parser
sets ``func`` to a callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from ichct import __version__
from ichct.errors import data_error

# Modules that add subcommands; each has register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "ichct.pipeline.cli.ingest",
    "ichct.pipeline.cli.synth",
    "ichct.pipeline.cli.manifest",
    "ichct.pipeline.cli.demo",
    "ichct.pipeline.cli.train",
    "ichct.pipeline.cli.evaluate",
    "ichct.pipeline.cli.bundle",
    "ichct.pipeline.cli.predict",
    "ichct.pipeline.cli.preprocess",
    "ichct.pipeline.cli.postprocess",
    "ichct.pipeline.cli.ensemble",
)

EXIT_OK, EXIT_DATA_ERROR, EXIT_USAGE, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 70, 130
#: The exit codes, for the help text of subcommands that list them.
EXIT_CODES_HELP = ("Exit codes: 0 success, 1 data error (bad input or a failed check; the message names the file), "
                   "2 usage error, 70 internal error (a bug: traceback shown, please report it).")
ISSUE_HINT = "the ichct issue tracker (or the ichct developers)"
logger = logging.getLogger("ichct.cli")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands from :data:`COMMAND_MODULES`)."""
    parser = argparse.ArgumentParser(
        prog="ichct",
        description="Find intracranial hemorrhage in head CT: ingest DICOM, train, evaluate, package, predict.",
    )
    parser.add_argument("--version", action="version", version=f"ichct {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    group.add_argument("-q", "--quiet", action="store_true", help="only errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, common)
    _add_exit_codes(parser)
    return parser


def _add_exit_codes(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand parser below it the exit codes as epilog (unless it has one)."""
    if parser.epilog is None:
        parser.epilog = EXIT_CODES_HELP
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _add_exit_codes(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    A closed stdout (``ichct info --json | head -1``) ends the command quietly with exit code 1, as
    Python's documentation recommends for SIGPIPE: the rest of stdout goes to devnull, so that
    neither a traceback nor "Exception ignored" appears at exit.
    """
    try:
        code = _run(argv)
        sys.stdout.flush()  # a broken pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_DATA_ERROR


def _stdout_to_devnull() -> None:
    """Point file descriptor 1 at devnull (nothing when sys.stdout has no file descriptor, as under pytest)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        pass


def _run(argv: Sequence[str] | None) -> int:
    from ichct.pipeline.core.logging_setup import configure_logging, hide_known_library_warnings

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    disabled = logging.root.manager.disable  # -q disables library logging below ERROR: undone on return
    configure_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0))
    if getattr(args, "verbose", 0) < 1:
        hide_known_library_warnings()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logger.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # main() ends quietly
    except Exception as exc:  # noqa: BLE001 - a data error (exit 1) or a bug (exit 70, traceback)
        cause = data_error(exc)
        if cause is None:
            _report_bug()
            return EXIT_INTERNAL_ERROR
        logger.error("%s", cause)
        logger.debug("where the error above was raised:", exc_info=exc)  # -v
        return EXIT_DATA_ERROR
    finally:
        logging.disable(disabled)


def _report_bug() -> None:
    """Print the traceback of the exception being handled and how to report it, on stderr.

    Written to stderr directly (not through logging), so that ``-q`` or a logging setup cannot
    hide it.
    """
    traceback.print_exc(file=sys.stderr)
    sys.stderr.write(f"ichct {__version__}: internal error (a bug). Please report it with the command and the "
                     f"traceback above to {ISSUE_HINT}.\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
