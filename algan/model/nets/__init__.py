"""The ALGAN networks and their objectives: generators, discriminators, losses and the inference head built of
discriminators (whitening + ensemble)."""
