"""Data: audio I/O, loaders on `datasets`, synthetic data sets, batching and augmentations."""
