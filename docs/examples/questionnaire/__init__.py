"""The questionnaire workflow used throughout the documentation.

``tests/test_docs.py`` runs it end to end, so what the docs show is what the
library does.
"""
