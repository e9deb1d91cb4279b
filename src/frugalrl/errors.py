"""The one exception type a user should ever see: the CLI prints it as a single line."""


class UserError(Exception):
    """A problem with the user's input (recipe, data, paths): reported without a traceback."""
