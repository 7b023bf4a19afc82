"""torchshrink.measure."""
