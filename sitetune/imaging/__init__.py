"""Volumes in and out: NIfTI / DICOM loading with exact geometry, DICOM SEG, phantoms.

Imports no web framework and no model code. Start with `sitetune.imaging.load.load_volume`
and `sitetune.imaging.volume.Volume`.
"""
