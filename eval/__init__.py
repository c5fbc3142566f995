"""Benchmarks: backbones x tasks, and speed."""
