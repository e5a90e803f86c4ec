"""Not imported by anything: the folder that :func:`lisa_formats.quiet.quiet_env` puts on ``PYTHONPATH``."""
