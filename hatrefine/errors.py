"""The one exception type hatrefine raises for problems a user can fix."""


class HatrefineError(ValueError):
    """Bad input or missing resource; the message names the problem and the fix.

    The CLI prints it as a single line and exits non-zero (a traceback only with ``--debug``).
    """


class HatrefineWarning(UserWarning):
    """Input that is probably a mistake but may be meant (e.g. images that all lie in [0, 1]);
    the CLI prints it as one line starting ``Warning:``."""
