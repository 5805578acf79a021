"""The command line: parses, calls the library, prints. ``aigc --help`` lists it all.

Bad input of any kind, and an OS fault (a full disk, a read-only or missing folder, no permission,
an image too large to open safely), ends in one sentence on stderr and exit status 2.
"""
from __future__ import annotations

import sys
import warnings

import typer

from ..errors import AigcError
from ..families import FAMILIES
from . import core  # noqa: F401  (registers the commands every family shares: data list, average)
from . import serve  # noqa: F401  (registers the service's admin commands: keys, usage)
from .common import app
from .faults import fault_message
from .train import register_train_commands

register_train_commands(FAMILIES)
for _family in FAMILIES:  # each family's generate / eval / edit commands register themselves
    _family.ref("cli")

try:  # typer >= 0.16 vendors click under typer._click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors


def main() -> None:
    """Entry point: usage errors, AigcError and OS faults exit 2 with one sentence; Ctrl-C exits 130."""
    warnings.showwarning = _warn
    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except click_errors.ClickException as exc:
        message = exc.format_message().strip()
        if message:  # (help shown for a bare group has no message)
            print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except AigcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        message = fault_message(exc)
        if message is None:  # a bug: keep its traceback
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _warn(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (a truncated prompt, ...) as one line on stderr, without source locations."""
    print(f"warning: {message}", file=sys.stderr)


__all__ = ["app", "main", "fault_message"]


if __name__ == "__main__":
    main()
