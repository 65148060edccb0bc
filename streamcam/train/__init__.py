"""``streamcam train``: fine-tune a CAM-ready classifier (GAP + one linear layer) on a folder of images.

- :mod:`.data`: the image folder, checked and split (:func:`~.data.read_image_folder`), its transforms and loaders;
- :mod:`.stages`: the backbone in stages, for ``--unfreeze N``;
- :mod:`.loop`: the training loop (:func:`~.loop.train_classifier`, :class:`~.loop.TrainOptions`);
- :mod:`.report`: the report beside the model (:func:`~.report.write_report`);
- :mod:`.command`: the command itself: options, then data, backbone, head, training, model file, report.

Nothing is imported here: the command line loads torch only once the arguments are checked.
"""
