"""Reporting: reading run folders, aggregation, comparisons with published numbers, verdicts, figures."""
