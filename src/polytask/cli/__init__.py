"""The ``polytask`` command line."""
