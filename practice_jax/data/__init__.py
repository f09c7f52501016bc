"""Datasets: the TFDS catalogue, offline preparation, and the device-resident input path."""
