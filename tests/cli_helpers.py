"""Old name of tests/helpers.py, kept so that tests written against it still import."""

from helpers import read_metrics, run_gancolor  # noqa: F401
