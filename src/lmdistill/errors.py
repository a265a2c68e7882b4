"""One exception type for mistakes a user can fix: the CLI prints it as one line and exits 2."""
import difflib


class UserError(Exception):
    pass


def did_you_mean(name, choices):
    """' (did you mean 'x'?)' for the nearest valid choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""
