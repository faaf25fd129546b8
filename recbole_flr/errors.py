"""
recbole_flr.errors
##################
The errors that a user's input causes, and how the command line reports them: one line naming the problem, a
non-zero exit, no traceback (``RECBOLE_FLR_TRACEBACK=1`` shows it). Any other exception is a bug of ours or of a
library and keeps its traceback.
"""

import os

import yaml


class UserInputError(ValueError):
    r"""A mistake in the user's settings, command line or files; the message names the key or file and what to do.

    A ``ValueError``, as RecBole's own checks raise, so callers that catch ValueError keep working.
    """


class UserFileNotFoundError(UserInputError, FileNotFoundError):
    r"""A file the user named (a config file, ...) that does not exist; also a ``FileNotFoundError``."""


class NonFiniteLossError(UserInputError):
    r"""A NaN or infinite training loss; the message names the stage, epoch and batch (a ValueError, as RecBole's).
    Reported like a user error: the usual cause is a setting (learning rate, loss weights)."""


class CheckpointError(RuntimeError):
    r"""A checkpoint file that cannot be read, or that belongs to another model."""


class DatasetNotFoundError(FileNotFoundError):
    r"""A dataset that is neither on disk nor downloadable."""


USER_ERRORS = (UserInputError, CheckpointError, DatasetNotFoundError, yaml.YAMLError)


def user_error_message(error):
    r"""The one-line report of a user error, or re-raise it with its traceback when asked to."""
    if os.environ.get("RECBOLE_FLR_TRACEBACK"):
        raise error
    return f"recbole_flr: error: {error}\n(set RECBOLE_FLR_TRACEBACK=1 to see the traceback)"
