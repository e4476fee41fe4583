"""Command-line entry points: ``mclstexp`` (subcommands) and ``mclstexp-tile``."""
