"""What every `mmu` command shares: the global options, the exit codes and the error lines.

Exit codes: 0 ok; 1 the command failed (a build error, a download that broke, a missing extra,
an output folder it cannot write); 2 a usage problem (a bad option, an unknown dataset or task
name, a name that is a path, a --hub that is a file). Every error is one line ``error: ...`` on
stderr; ``-v`` adds the traceback of an unexpected one.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mmu.extras import MissingExtra, require_extra  # noqa: F401 - a command's first line; exits 1

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line names something that does not exist or does not fit (exit 2)."""


class CommandFailed(Exception):
    """The command ran and failed (exit 1)."""


def dask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default: up to 2)")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                        "(a distributed or dask-jobqueue SLURM cluster)")


def add_global_options(p: argparse.ArgumentParser, top: bool = True) -> None:
    """-v / -q / --no-progress. On a subcommand's parser they default to SUPPRESS, so that
    `mmu -q build ...` and `mmu build ... -q` both work and neither resets the other."""
    d = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("output") if top else p
    g.add_argument("-v", "--verbose", action="count", help="more detail: debug messages, and the "
                   "traceback of an unexpected error", **({"default": 0} if top else d))
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars",
                   **({"default": False} if top else d))
    g.add_argument("--no-progress", action="store_true", help="no progress bars (messages stay)",
                   **({"default": False} if top else d))


def _subparsers(p: argparse.ArgumentParser):
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from dict.fromkeys(action.choices.values())  # an alias maps to the same parser


def propagate_global_options(p: argparse.ArgumentParser) -> None:
    """Add the global options to every subcommand's parser, at any depth."""
    for child in _subparsers(p):
        taken = set(child._option_string_actions)
        if not taken & {"-v", "--verbose", "-q", "--quiet", "--no-progress"}:
            add_global_options(child, top=False)
        propagate_global_options(child)


def mark_group(p: argparse.ArgumentParser) -> None:
    """A parser whose subcommand is required: without one, its help goes to stderr, exit 2."""
    p.set_defaults(func=None, help_parser=p)


def apply_global_options(args: argparse.Namespace) -> None:
    import mmu.logs

    verbose, quiet = getattr(args, "verbose", 0) or 0, getattr(args, "quiet", False)
    if verbose and quiet:
        raise UsageError("-v/--verbose and -q/--quiet contradict each other: give one")
    if quiet:
        mmu.logs.set_verbosity("warning")
    elif verbose:
        mmu.logs.set_verbosity("debug")
        # third-party libraries' info messages too (basicConfig leaves a configured root alone)
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        logging.getLogger().setLevel(logging.INFO)
    else:
        mmu.logs.set_verbosity("info")
    if getattr(args, "no_progress", False):
        mmu.logs.disable_progress_bars()


def check_hub(hub: str | Path | None) -> None:
    """A --hub that is a file (or lies under one) is a usage error, not an OSError deep inside."""
    if hub is None or str(hub).startswith("hf://"):
        return
    path = Path(hub)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == path else f"lies under {p}, which is a file"
                raise UsageError(f"--hub {hub} {where}: a hub is a folder (one subfolder per dataset)")
            return


def _existing(path: Path) -> Path:
    """`path` or its nearest existing folder above it."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def check_writable(path: str | Path | None, option: str) -> None:
    """Refuse, before any work, an output the command could not write: the folder `path` names (or,
    when it does not exist yet or is a file, the nearest existing folder above it, where it will be
    made) must be writable. `mmu export-wds --out`, `mmu eval embed --out` and every other --out
    are checked by `dispatch`; a command whose output is its hub (`mmu crossmatch`) calls it.

    Raises:
        UsageError: the path lies under a file.
        CommandFailed: the folder is read-only (a read-only file system, or its permissions).
    """
    if path is None or str(path).startswith("hf://"):
        return
    path = Path(path)
    where = _existing(path)
    if where != path and not where.is_dir():
        raise UsageError(f"{option} {path} lies under {where}, which is a file: give a folder path")
    folder = where if where.is_dir() else where.parent
    if os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    why = "is on a read-only file system" if read_only else "is not writable (permission denied)"
    raise CommandFailed(f"{option} {path}: cannot write there: {folder} {why}; choose a writable "
                        f"{option} or fix the folder's permissions")


def error(message: str) -> None:
    """The one `error: ...` line on stderr (a multi-line message keeps its own lines)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str):
        return e.args[0]  # str(KeyError) adds quotes
    text = str(e)
    return text if text else type(e).__name__


def dispatch(args: argparse.Namespace) -> int:
    """Run the command `args.func` and turn its outcome into an exit code (see the module doc)."""
    func = getattr(args, "func", None)
    if func is None:  # `mmu`, `mmu eval`, `mmu catalog`, `mmu docs` without a subcommand
        args.help_parser.print_help(sys.stderr)
        return EXIT_USAGE
    from mmu.hub.layout import UnsafePath

    try:
        apply_global_options(args)
        check_hub(getattr(args, "hub", None))
        check_writable(getattr(args, "out", None), "--out")
        return int(func(args) or 0)
    except (UsageError, UnsafePath) as e:  # a name that is a path is refused input, as a usage error
        error(_message(e))
        return EXIT_USAGE
    except (CommandFailed, MissingExtra) as e:
        error(_message(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the user; -v shows the traceback
        if getattr(args, "verbose", 0):
            raise
        error(f"{_message(e)}  ({type(e).__name__}; rerun with -v for the traceback)")
        return EXIT_FAILED


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv` with `parser` (argparse exits 2 on a bad option) and run the command."""
    parser.set_defaults(help_parser=parser)
    args = parser.parse_args(argv)
    return dispatch(args)
