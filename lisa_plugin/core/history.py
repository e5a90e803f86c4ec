"""What a LISA run records; the records and their file format live in :mod:`lisa_formats.history`."""

from lisa_formats.history import FORMAT, HISTORY_FILE, LisaHistory, SwitchEvent, read_history

__all__ = ["FORMAT", "HISTORY_FILE", "LisaHistory", "SwitchEvent", "read_history"]
