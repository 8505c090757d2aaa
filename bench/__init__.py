"""taskactors benchmarks: ``python -m bench`` (``make bench``; ``QUICK=1`` for a small run).

Each scenario prints one JSON object per figure on stdout, with the baseline
measured in the same run and the ratio; progress goes to stderr. See
``bench/__main__.py`` and issue 5.
"""
