"""Fine-tuning a CAM-ready classifier on a folder of labelled images (``streamcam train``)."""
