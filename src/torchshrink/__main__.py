"""``python -m torchshrink`` runs the command line."""

from torchshrink.cli.app import run

run()
