"""Attack scripts for the hardening work (issue 19): each reproduces one attack over 127.0.0.1.

Every script is bounded in requests and time, stops by itself, and can run
against another checkout (``--tree DIR``, e.g. ``git worktree add /tmp/clary-base <ref>``)
so one run gives the before/after figures recorded in ``benchmarks/security/README.md``.
"""
