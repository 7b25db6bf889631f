"""Sub-commands of the `ramit` command line."""
