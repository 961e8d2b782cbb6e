"""``trainmap evidence``: regenerate the evidence report (``docs/evidence/``) from ordinary
runs: the plan (``plan``), its execution with one JSON record per experiment (``runner``,
``records``), and the report written from the records (``report``)."""
