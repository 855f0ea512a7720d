"""The one exception type users of the library catch: bad input they can fix."""


class PoetryError(ValueError):
    """Bad input (an unknown poet, an impossible option, a damaged file), with a message that says
    what was wrong and what is accepted."""
