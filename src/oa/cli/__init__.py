"""Entry points: the `oa` command line (typer + rich)."""
