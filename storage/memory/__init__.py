"""The in-memory backend: tests and throwaway runs."""

from ._backend import MemoryBackend as MemoryBackend

__all__ = [
    "MemoryBackend",
]
