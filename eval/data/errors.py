"""The one exception the data stage raises for problems a user can fix (missing package, bad layout, corrupt file)."""
from __future__ import annotations

from spark.errors import InputError


class DataError(InputError, RuntimeError):
    """An actionable data problem; the message is one line that names the file, folder or command involved."""
