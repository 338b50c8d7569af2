"""Diagnostics of runs: the HTML report (:mod:`.report`), tile pictures (:mod:`.show`), the table of
past runs and the readers of run folders (:mod:`.runs`), and their figures (:mod:`.figures`)."""
