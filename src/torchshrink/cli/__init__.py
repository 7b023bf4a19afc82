"""torchshrink.cli."""
