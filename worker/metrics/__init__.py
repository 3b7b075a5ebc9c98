"""Prometheus metrics, correct under Celery's prefork pool and for `retention sweep` from cron.

Three sources serve one set of names (docs/operations/metrics.md lists them all):

* **Recorded** where things happen: jobs, sweeps, provider requests, S3 errors, scrubs
  (``recorders``, a leaf that the archive, the adapters and the job may import). Under the
  worker every process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``, and the
  worker's main process serves them merged on ``[metrics] port`` (prometheus-client's
  multiprocess mode). prometheus-client decides how to store values when it is first
  imported, so ``recorders`` imports it only when a metric is first used: ``serving.serve``
  (in the worker's main process, before it forks its children) sets the directory up first.
* **Read from the ledger** by `retention exporter` alone (``gauges.LedgerCollector``, served
  by ``serving.run_exporter``): jobs by state, held, overdue and failed jobs, the oldest
  overdue job's lateness. The ledger is one, so is its exporter, as kube-state-metrics is for
  a cluster: the workers do not each count the same table. Read at most every ``[metrics]
  ledger_cache_seconds`` (15), so a failed job's alert lasts as long as the job is failed,
  however long ago it failed.
* **Computed from each provider's cron schedule** (``gauges.ScheduleCollector``, on each
  worker's /metrics): the next sweep it calls for after the last success, as
  kube-state-metrics' ``kube_cronjob_next_schedule_time``, so the dead-man's switch waits for
  the schedule's own next run (weekdays only, weekly...), never a fixed gap.

A `retention sweep` run by hand (cron, a Kubernetes CronJob) records into its own process and
serves nothing; ``export.export_after_command`` then writes the same metrics to
node_exporter's textfile collector and/or a Pushgateway, added to what the previous runs
left there.

Only the entry points import ``gauges``, ``serving`` and ``export``: the Celery app and
`retention exporter` serve, the command line exports. This module imports nothing, so
importing ``recorders`` costs no more than ``recorders`` itself.
"""
