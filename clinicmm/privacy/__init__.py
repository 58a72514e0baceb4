"""Patient privacy: keyed pseudonyms for what reaches MLflow, DICOM and note de-identification."""
