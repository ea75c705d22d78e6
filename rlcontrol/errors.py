"""Errors a user can act on.

Anything raised as `UserError` reaches the command line as one line on stderr and exit
code 2 (see rlcontrol.cli); everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a config, a flag, a file. The message is shown as is."""


class ConfigError(UserError):
    """A config file or override that does not validate."""
