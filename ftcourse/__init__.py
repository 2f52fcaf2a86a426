"""ftcourse: a hands-on course on fine-tuning and transferability.

The notebooks tell the story; this package holds the mechanisms they use, one module per idea:

- ``env``          device, profile and seeding (``setup``)
- ``lab``          the transfer lab: procedural images from latent factors, source and target tasks
- ``data``         image datasets as device tensors, batched augmentation, real datasets
- ``models``       a small ResNet with named stages, torchvision's ResNets in the same shape, ``pretrained("lab")``
- ``pretrain``     the recipe of the shipped lab checkpoint
- ``train``        the training engine (``fit(steps=...)``, ``evaluate``, ``predict``) and its ``History``
- ``lr``           learning-rate schedules
- ``rangetest``    the LR range test (``lr_find``)
- ``transfer``     freezing, layer-wise rates, gradual unfreezing, L2-SP, LP-FT, re-initialisation
- ``measure``      transferability scores, representation similarity, weight distance, forgetting
- ``experiments``  scratch vs linear probe vs fine-tune, and Yosinski's copied-stages experiment
- ``sweep``        grids of runs with an on-disk cache
- ``stats``        mean ± std over seeds, the paired interval behind every claim
- ``plots``, ``widgets``  figures and explorers
- ``checks``, ``exercises``, ``grade``  exercise feedback, exercises generated from solutions, the autograder
- ``files``        atomic writes
- ``downloads``    downloads with a time limit
- ``versions``     which torch features set the lower version bounds
- ``cli``          the ``ftcourse`` command
"""

__version__ = "0.4.0"
