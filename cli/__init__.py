"""The ``parlo`` command."""
