"""Errors that carry a message meant for the user.

The CLI turns any :class:`AigcError` into one clear sentence on stderr and exit
status 2; everything else is a bug and keeps its traceback.
"""


class AigcError(Exception):
    """Base class: bad input that the user can fix."""


class ConfigError(AigcError):
    """An unknown option, a value out of range, or an inconsistent config."""


class DataError(AigcError):
    """A missing file, an unknown or uninstalled data set, an empty corpus."""


class CheckpointError(AigcError):
    """A missing, corrupt or foreign checkpoint."""
