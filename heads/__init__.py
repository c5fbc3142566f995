"""Task heads on top of a backbone's output: genre classification and multi-task ratings."""
