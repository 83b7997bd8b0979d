"""``ics-sms bench``: every stage of the pipeline measured on real RabbitMQ.

One module per concern: :mod:`~ics_sms.bench.options` (what to run), ``stages/`` (one
module per stage, each run returning a :class:`~ics_sms.bench.results.Sample`),
:mod:`~ics_sms.bench.runner` (rounds of stages), :mod:`~ics_sms.bench.report` (targets,
JSON, the table), :mod:`~ics_sms.bench.plot` (``--plot``) and
:mod:`~ics_sms.bench.profile` (py-spy summaries). Child processes are started and always
stopped by :mod:`~ics_sms.bench.procs` and measured by :mod:`~ics_sms.bench.system`
(psutil); :mod:`~ics_sms.bench.relay` is the bare relay limit's process. Each stage run
has a namespace of its own (:mod:`~ics_sms.bench.context`). See docs/performance.md.
"""

from ics_sms.bench.options import BenchOptions, Stage

__all__ = ["BenchOptions", "Stage"]
