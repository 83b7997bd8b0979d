"""One module per stage; each run of a stage returns a :class:`~ics_sms.bench.results.Sample`."""
