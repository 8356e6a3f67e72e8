"""Measurements on label maps: LV wall thickness, lesion burden, segmentation metrics.

Imports no web framework and no model code. `sitetune.measure.ventricle.measure_ventricle`
reports an LV label map over its cardiac phases (ED/ES, volumes, wall thickness by
`sitetune.measure.thickness.wall_thickness`, whose stages are `surfaces`, `laplace` and
`path_lengths`); `sitetune.measure.segments` finds the LV long axis and assigns the
AHA 17 segments; `sitetune.measure.lesions` counts and sizes lesions;
`sitetune.measure.metrics` scores a segmentation against a reference. The thickness
solvers are compiled with numba: `sitetune.measure.labels` is the light module the HTTP
surface imports without them.
"""
