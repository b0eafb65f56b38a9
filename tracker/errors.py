"""Errors the library raises on purpose; the CLI turns each into one line on stderr."""


class TrackerError(Exception):
    """Base class: a problem the user can act on, with a message that says how."""


class RunNotFound(TrackerError):
    pass


class AmbiguousRun(TrackerError):
    pass


class MetricNotFound(TrackerError):
    pass


class SchemaOutOfDate(TrackerError):
    pass


class SchemaTooNew(TrackerError):
    pass


class DatabaseUnavailable(TrackerError):
    pass


class CheckpointError(TrackerError):
    """A checkpoint cannot be used: missing, modified, or of the wrong kind for the target."""
