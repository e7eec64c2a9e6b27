"""The n2s_eds benchmark harness (outside the installed package).

One module per concept; none imports a private name of another, and the imports run one way:

* :mod:`harness.versions`: code versions (hashes of the source behind a result);
* :mod:`harness.cases`: the benchmark cases (noisy input, split or truth, guide);
* :mod:`harness.external`: the external baselines (espm in its own environment, multi-modal
  fusion);
* :mod:`harness.methods`: the denoisers as the benchmark runs them;
* :mod:`harness.cache`: the on-disk cache of the slow rows;
* :mod:`harness.scores`: the table's columns and how one denoised cube (or a maps-only
  method's maps) is scored;
* :mod:`harness.carry`: rows copied from a previous table instead of computed (``--carry``);
* :mod:`harness.runner`: running methods on cases (:func:`harness.runner.run_bench`);
* :mod:`harness.report`: tables, CSV/Markdown files and figures;
* :mod:`harness.hallucination`: the guide-image hallucination checks;
* :mod:`harness.reference`: ``--check-notes``, the baselines against ``reference_gains.csv``;
* :mod:`harness.cli`: the command line (``benchmarks/run_bench.py``).

Import it with ``benchmarks/`` on ``sys.path`` (``run_bench.py`` and the scripts do that).
"""
