"""Training: datasets cut from Scenes, weak labels, EMA teachers, losses, 3D nets, methods, trainer."""
