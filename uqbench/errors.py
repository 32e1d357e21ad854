"""The one exception type for bad user input: the CLI prints it as one line and exits 2."""


class UQBenchError(Exception):
    """Invalid input or environment that the user can fix (shown without a traceback)."""
