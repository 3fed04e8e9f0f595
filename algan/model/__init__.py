"""The torch model side: what is trained, fitted and evaluated before export.

- :mod:`algan.model.nets`: ALGAN networks, losses and the discriminator-ensemble head;
- :mod:`algan.model.gan`: the one GAN training loop, checkpoints, presets, the feature and image variants;
- :mod:`algan.model.heads`: the head modules and the registry of head kinds (one class per ``variant:head``);
- :mod:`algan.model.evaluation`: image- and pixel-level metrics, patch-head comparison, threshold estimators;
- :mod:`algan.model.detector`, :mod:`algan.model.fit`, :mod:`algan.model.select`: the traceable detector, the
  training pipeline behind ``algan-train`` and ``--head auto``; :mod:`algan.model.estimator`: the scikit-learn
  style ALGAN estimator for plain vectors.
"""
