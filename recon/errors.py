"""The one exception type for bad user input; the CLI turns it into one line and exit code 2."""


class InputError(ValueError):
    """Bad input from the user: the message says what is wrong, where, and how to fix it, in one line."""
