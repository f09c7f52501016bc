"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
  """Bad input (config, data, workdir): its message is one sentence saying what is
  wrong and how to fix it. Entry points print it without a traceback."""
