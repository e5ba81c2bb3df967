"""Subcommands of the ``edgeless-telemetry`` console script.

A module here defines ``register(subparsers)``, which adds its parsers and
sets ``run`` (a function of the parsed args returning an exit code) on each.
"""
