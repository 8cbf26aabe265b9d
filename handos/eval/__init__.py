"""Evaluation: metrics (`metrics`), GT <-> prediction matching (`matching`), the report (`report`), evaluation runs (`run`) and speed measurements (`bench`)."""
