"""The one error of the data layer."""


class DataError(ValueError):
  """A data source that cannot be used; the message names the path."""
