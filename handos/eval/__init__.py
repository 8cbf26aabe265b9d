"""Evaluation: metrics (`metrics`), GT <-> prediction matching (`matching`), the report and `handos eval` (`cli`)."""
