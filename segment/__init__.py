"""2D models (SegFormer), batch inference, metrics, palettes. Never imports `rewis`."""
