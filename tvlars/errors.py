"""The one exception type for problems a user can fix (bad config, missing data, bad checkpoint)."""


class UserError(Exception):
    """A readable, user-fixable problem. The CLI prints ``error: <message>`` and exits with code 2.

    The message names the config key or path at fault and how to fix it, in one line.
    """

    def __init__(self, message: str) -> None:
        # A DataLoader worker's exception reaches the main process rebuilt as type(exc)(text) with text =
        # "Caught UserError in DataLoader worker process N.\nOriginal Traceback ...\n<module>.UserError: <message>"
        # (torch's ExceptionWrapper.reraise): keep the worker's one-line message.
        if message.startswith(f"Caught {type(self).__name__} in "):
            message = message.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1]
        super().__init__(message)
