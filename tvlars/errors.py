"""The one exception type for problems a user can fix (bad config, missing data, bad checkpoint)."""


class UserError(Exception):
    """A readable, user-fixable problem. The CLI prints ``error: <message>`` and exits with code 2.

    The message names the config key or path at fault and how to fix it, in one line.
    """
