"""Console progress, metric files (TensorBoard + JSON lines), PNG plots and run records.

This package knows metrics and plots, not models or tasks.
"""
