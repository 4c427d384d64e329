"""Properties from MD trajectories and thermo logs, each with a block-averaged error bar.

Modules: ``blocks`` (block averaging, SEM), ``correlation`` (FFT autocorrelation), ``rdf``, ``msd``
(unwrapping, mean-square displacement, self-diffusion), ``conductivity`` (Nernst–Einstein, Einstein),
``viscosity`` (Green–Kubo), ``frames`` (trajectory → arrays), ``report`` (the ``sci-fm analyze`` command).
"""
