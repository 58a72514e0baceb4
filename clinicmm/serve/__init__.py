"""Serving: the registered model (pyfunc), scoring, batch predict, explanations, Grad-CAM and DICOM SR."""
