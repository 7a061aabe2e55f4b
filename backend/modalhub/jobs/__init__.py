"""Jobs: the state machine, processing of inbox entries, results and the jobs API."""
