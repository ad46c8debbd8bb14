"""The one exception type for mistakes a user can make."""


class UsageError(Exception):
    """A problem the user caused and can fix; the message names both.

    The command line turns it into one line on stderr and exit status 2.
    """
