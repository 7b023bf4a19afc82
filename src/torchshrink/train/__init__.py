"""torchshrink.train."""
