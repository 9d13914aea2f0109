"""The pure core of Flow: immutable values and functions that decide, with no I/O.

Nothing here reads the clock, the environment, files or the network; the shell (flowd, the SDK)
passes `now`, IDs, catalogs and file lists in. Functions return `returns.result.Result` values
whose failures are `DomainError` values, never exceptions.
"""
