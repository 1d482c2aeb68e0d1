"""Azure Monitor platform metrics, measured on this host: a sampler task reads /proc and cgroup counters of
every VM and container group every few seconds (`sampler.py`, one source per resource type in
`virtual_machines.py` and `container_groups.py`, their shape in `base.py`) into a bounded in-memory ring
buffer (`buffer.py`); `service.MetricsService.series` aggregates it into grain buckets (`aggregate.py`) for
the REST API (`kumo.providers.insights.metrics`) and the autoscale evaluator. See docs/metrics.md."""
