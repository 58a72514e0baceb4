"""Image encoding: the MONAI pipeline, the frozen or trained network, train-image."""
