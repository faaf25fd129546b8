"""
recbole_flr.errors
##################
The errors that a user's input causes, and how the command line reports them: one line naming the problem, a
non-zero exit, no traceback (``RECBOLE_FLR_TRACEBACK=1`` shows it).
"""

import os

import yaml

from recbole_flr.trainer.compat import CheckpointError

# SyntaxError: RecBole's Config raises it for a --key given twice with different values
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, CheckpointError, yaml.YAMLError, SyntaxError)


def user_error_message(error):
    r"""The one-line report of a user error, or re-raise it with its traceback when asked to."""
    if os.environ.get("RECBOLE_FLR_TRACEBACK"):
        raise error
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return f"recbole_flr: error: {message}\n(set RECBOLE_FLR_TRACEBACK=1 to see the traceback)"
