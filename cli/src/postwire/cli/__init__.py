"""`postwire`, the project's one command-line entry point."""
