"""Errors the command line turns into exit code 2 (bad input) rather than 1 (a bug)."""


class InputError(Exception):
    """Bad input or configuration: the message says what was wrong and what to do."""


class ConfigError(InputError):
    """A configuration key or value that cannot be used."""
