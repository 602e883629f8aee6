"""Entry point of the ``headwater`` command."""

from __future__ import annotations

import click


@click.group()
def cli() -> None:
    """headwater: durable, partitioned event streams."""


def main() -> None:
    """Run the ``headwater`` command line."""
    cli()
