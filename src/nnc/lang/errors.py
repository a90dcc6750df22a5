"""Errors a user can act on. The CLI prints them as one line and exits with their code."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, data). `exit_code` 1 for a problem in the
    spec or data, 2 for usage or I/O, as the contract's exit codes say."""

    def __init__(self, message: str, exit_code: int = 2, help: str | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.help = help


class SpecError(UserError):
    """A spec that does not check: carries the CheckResult with its diagnostics."""

    def __init__(self, result):
        errors = result.errors
        first = errors[0] if errors else None
        msg = f"{result.path} has {len(errors)} error{'s' if len(errors) != 1 else ''}"
        if first is not None:
            msg += f"; the first: {first.file}:{first.span.line}:{first.span.col}: {first.message}"
        super().__init__(msg, exit_code=1)
        self.result = result


class Reported(Exception):
    """The problem has already been printed (a spec's diagnostics): the CLI only exits with `exit_code`."""

    def __init__(self, exit_code: int):
        super().__init__(exit_code)
        self.exit_code = exit_code
