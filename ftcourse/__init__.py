"""ftcourse: a hands-on course on fine-tuning and transferability.

The notebooks tell the story; this package holds the mechanisms they use:

- ``env``      device, profile and seeding (``setup``)
- ``data``     image datasets as device tensors, GPU augmentation, real datasets
- ``models``   a small ResNet with named stages, and torchvision's ResNet-18 in the same shape
- ``train``    the training loop (``fit``, ``evaluate``) and its ``History``
- ``lr``       learning-rate schedules and the range test
- ``measure``  transferability scores and representation similarity
- ``sweep``    grids of runs with an on-disk cache
"""

__version__ = "0.1.0"
