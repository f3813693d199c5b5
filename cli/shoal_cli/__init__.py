"""The `shoal` command: one entry point that dispatches to each component's subcommand."""
