"""Soak and torture runs of ``make soak``: real processes, SIGKILL, long fuzzing (issue #17)."""
