"""Sources (images, RGB-D, LiDAR, COLMAP, synthetic) -> Scene. Imports neither `segment` nor `rewis`."""
