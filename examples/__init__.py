"""Runnable examples of triggers (see README.rst, ``make demo``)."""
