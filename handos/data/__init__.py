"""Training data: synthetic hands (`synthetic`), the foundation's measured error model (`error_model`,
`error_stats.json` from `measure_errors.py`) and dataset loaders (`loaders`)."""
