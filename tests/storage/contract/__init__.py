"""The storage contract: every backend passes this suite unchanged.

One file per capability. Each test runs once per backend listed in
``conftest.BACKENDS`` and talks to the store only through the public
``storage.Store`` client and ``store.execute(command)``. Time-dependent tests
request ``autojump_clock``: leases and TTLs run on trio's clock, and
``store.clock.now()`` stays put until the test sleeps, so timestamps can be
compared exactly.
"""
