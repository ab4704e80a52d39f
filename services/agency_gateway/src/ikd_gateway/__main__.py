"""`python -m ikd_gateway` runs the CLI."""

from ikd_gateway.cli import app

app(prog_name="ikd-gateway")
