"""Tuning records: MetaSchedule tuning (``lwc tune``) and applying its records at compile.

The package, one job per module; each imports only the ones listed before it:

- :mod:`lwc.tuning.keys`: what names a tuning log -- model key, graph variant, target
  name, the target identity records are checked against.
- :mod:`lwc.tuning.logs`: where logs are and which one a compile uses -- search roots,
  manifests, CPU substitution for ``host`` logs, :func:`~lwc.tuning.logs.locate_log`.
- :mod:`lwc.tuning.database`: MetaSchedule's JSON database in a log folder -- opening and
  repairing it, the records valid for a target, copying records from other logs, the
  tensor intrinsics the records replay.
- :mod:`lwc.tuning.threads`: single-thread kernels -- timing tuned kernels on one thread
  and on all, the decisions file, applying it.
- :mod:`lwc.tuning.apply`: the compile side -- legalize + fuse (:func:`~lwc.tuning.apply.prepare`),
  tasks, applying records, lwc's fixed schedules.
- :mod:`lwc.tuning.seed`: ``lwc tune`` starts each task from lwc's rule schedule
  (:mod:`lwc.schedules`), measured and committed as a record, so tuning never ends slower
  than the rule.
- :mod:`lwc.tuning.search`: ``lwc tune`` -- task plans, MetaSchedule's search, progress,
  the time budget and Ctrl-C, the single-thread measurement at the end.

``lwc tune`` tunes the module :func:`lwc.prepare.prepare` returns, the one
``lwc compile`` schedules, so both see the same tasks.
"""
