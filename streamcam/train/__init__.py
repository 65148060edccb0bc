"""``streamcam train``: fine-tune a CAM-ready classifier (GAP + one linear layer) on a folder of images.

- :mod:`.data`: the image folder, checked and split (:func:`~.data.read_image_folder`), its transforms and loaders;
- :mod:`.loop`: the training loop (:func:`~.loop.train_classifier`, :class:`~.loop.TrainOptions`).

Nothing is imported here: the command line loads torch only once the arguments are checked.
"""
