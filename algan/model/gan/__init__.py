"""ALGAN training: the one GAN loop, its checkpoints and presets, and the feature and image variants."""
