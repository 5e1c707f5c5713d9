"""Distillation datasets in the field's format (Minari): record a run, export it, distil from it.

- ``record_dataset: true`` (any generalist run) records every labelled step with its episode
  boundaries under ``RUN/dataset`` (:mod:`polydistill.datasets.recorder`).
- :func:`~polydistill.datasets.minari_io.export_run` writes the recording as Minari datasets
  (``polydistill dataset export RUN --out DIR``); :func:`~polydistill.datasets.minari_io.load_dataset`
  reads any Minari dataset back as distillation rows (:mod:`polydistill.datasets.rows`).
- :mod:`polydistill.datasets.offline` distils a student from those rows (behaviour cloning,
  then optional DAgger): ``polydistill distill --dataset DIR``.

Only the export and import need the ``minari`` extra; recording needs nothing more.
"""

from polydistill.datasets.recorder import DatasetRecorder, RoundRecorder, iter_episodes, read_recording
from polydistill.datasets.rows import DatasetRows, DatasetTask, recorded_rows

__all__ = ["DatasetRecorder", "RoundRecorder", "read_recording", "iter_episodes", "DatasetRows",
           "DatasetTask", "recorded_rows"]
