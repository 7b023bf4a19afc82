"""torchshrink.core."""
